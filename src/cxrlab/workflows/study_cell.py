"""One study cell in its own process: ``python -m cxrlab.workflows.study_cell CONFIG.json STATUS``.

The local launcher starts one of these per visible GPU (``CUDA_VISIBLE_DEVICES`` set to
that GPU), so a study grid fills a multi-GPU machine without a scheduler.  The config is
the cell's resolved config (JSON), the status its plan status (``new``, ``partial``,
``changed``).  Exit status 0 = trained, 2 = a cxrlab error (one line on stderr).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cxrlab.config import build_config
from cxrlab.errors import CxrlabError


def main(argv: list[str]) -> int:
    from cxrlab.workflows.study import run_cell

    path, status = argv
    try:
        cfg = build_config(json.loads(Path(path).read_text()), path)
        run_cell(cfg, status)
    except CxrlabError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
