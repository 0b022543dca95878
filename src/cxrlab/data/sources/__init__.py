"""Dataset sources: each reads one published layout into a :class:`Manifest`.

Sources register by name; configs and the CLI refer to them by that name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from cxrlab.data.manifest import Manifest
from cxrlab.errors import CxrlabError


class SourceFn(Protocol):
    def __call__(self, root: str, labels: list[str] | None, val_fraction: float, seed: int) -> Manifest: ...


_SOURCES: dict[str, SourceFn] = {}


def register_source(name: str) -> Callable[[SourceFn], SourceFn]:
    def add(fn: SourceFn) -> SourceFn:
        if name in _SOURCES:
            raise KeyError(f"duplicate source {name!r}")
        _SOURCES[name] = fn
        return fn

    return add


def list_sources() -> list[str]:
    return sorted(_SOURCES)


def load_source(name: str, root: str, labels: list[str] | None = None,
                val_fraction: float = 0.1, seed: int = 0) -> Manifest:
    """Build the manifest of dataset ``name`` stored at ``root``."""
    if name not in _SOURCES:
        raise CxrlabError(f"unknown data source {name!r}; known: {', '.join(list_sources())}")
    return _SOURCES[name](root=root, labels=labels, val_fraction=val_fraction, seed=seed)


# register the built-in sources
from cxrlab.data.sources import nih  # noqa: E402,F401
