"""What a workflow wrote, for the command line to say, without the command knowing a file name.

Every cxrlab file is written through :mod:`cxrlab.runio` (atomically), which reports each path to
the :func:`outputs` blocks around the call; so the list a command prints is what the workflow wrote,
no more (a file name the CLI spelled but the workflow skipped) and no less (a new figure or record).
The rules about what is written (thresholds re-chosen only where a validation table exists, the
report refreshed only where there is one) stay in the workflows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrlab.runio import atomic_write_json, recording

#: A subfolder with more files written than this is one line (``RUN/figures/ (12 files)``).
FOLDED = 3


@dataclass
class Outputs:
    """The paths written inside an :func:`outputs` block, in order of first write."""

    paths: list[Path] = field(default_factory=list)

    def shown(self) -> list[str]:
        """What to print: one entry per file, except that a folder in which more than :data:`FOLDED` files
        were written, inside a folder that got files of its own, is one entry ``DIR/ (N files)`` (the run
        folder's ``figures/``, the demo's ``phantom/``)."""
        count: dict[Path, int] = {}
        for p in self.paths:
            count[p.parent] = count.get(p.parent, 0) + 1
        out: list[str] = []
        for p in self.paths:
            d = p.parent
            entry = f"{d}/ ({count[d]} files)" if count[d] > FOLDED and d.parent in count else str(p)
            if entry not in out:
                out.append(entry)
        return out


@contextmanager
def outputs() -> Iterator[Outputs]:
    """Collect what the workflows called inside the block write (see the module docstring)."""
    with recording() as sink:
        out = Outputs(sink)
        yield out


def save_json(path: str | Path, obj: Any) -> Path:
    """Write a result as JSON where the user asked (``--json FILE``): atomically, NaN as null."""
    return atomic_write_json(path, obj.to_dict() if hasattr(obj, "to_dict") else obj)
