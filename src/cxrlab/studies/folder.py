"""The study folder: the only code that knows its file names (as :class:`~cxrlab.run.RunFolder` is for a run).

A study folder ``studies/<name>`` (``<name>-phantom`` for the small form)::

    preset.yaml       the study file as given (comments kept); ``study report`` reads the spec from it
    recipe.yaml       the recipe the study file names in ``base`` (the paper's settings), as given
    study.yaml        what ran: every cell's resolved config and the command line verbatim
    study.json        the report's numbers (cells x labels with CIs, tests, published values)
    report.html       the report, one self-contained page
    report.md         the same tables; its figures in figures/
    figures/          the report's figures as PNG files (report.md links them)
    runs/<cell>/      one run folder per cell (trained cells and post-step cells such as ensembles)
    data/, data.json  the phantom form's dataset and its marker (what was drawn)
    data/masks/       the phantom form's lung and heart masks (what ``study run`` audits each cell against)
    cache/            the phantom form's decoded-image cache
    logs/             one log and one resolved config per cell of the per-GPU launcher
    submitit/         submitit's job folders (the SLURM launcher)

It sits beside the study spec (below ``workflows/`` and ``report/``, which both use it) and
imports no run-folder code: a cell's run folder is ``RunFolder(study.run_path(cell))``.
"""

from __future__ import annotations

from pathlib import Path


class StudyFolder:
    """A study folder on disk: its paths, named once."""

    PRESET = "preset.yaml"
    RECIPE = "recipe.yaml"
    RESOLVED = "study.yaml"
    RESULT = "study.json"
    REPORT_HTML = "report.html"
    REPORT_MD = "report.md"
    FIGURES = "figures"
    RUNS = "runs"
    DATA = "data"
    DATA_MARKER = "data.json"
    MASKS = "masks"
    CACHE = "cache"
    LOGS = "logs"
    SUBMITIT = "submitit"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.preset_file = self.path / self.PRESET
        self.recipe_file = self.path / self.RECIPE
        self.resolved_file = self.path / self.RESOLVED
        self.result_file = self.path / self.RESULT
        self.report_html = self.path / self.REPORT_HTML
        self.report_md = self.path / self.REPORT_MD
        self.figures = self.path / self.FIGURES
        self.runs = self.path / self.RUNS
        self.data_dir = self.path / self.DATA
        self.data_marker = self.path / self.DATA_MARKER
        self.data_masks = self.data_dir / self.MASKS
        self.cache_dir = self.path / self.CACHE
        self.logs = self.path / self.LOGS
        self.submitit = self.path / self.SUBMITIT

    @classmethod
    def of(cls, name: str, phantom: bool, out: str | Path = "studies") -> StudyFolder:
        """``<out>/<name>``, or ``<out>/<name>-phantom`` for the phantom form (never mixed with the real one)."""
        return cls(Path(out) / (f"{name}-phantom" if phantom else name))

    def __repr__(self) -> str:
        return f"StudyFolder({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StudyFolder) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def run_path(self, cell: str) -> Path:
        """The run folder of one cell (``runs/<cell>``)."""
        return self.runs / cell

    def cell_log(self, cell: str) -> Path:
        """The per-GPU launcher's log of one cell."""
        return self.logs / f"{cell}.log"

    def cell_config(self, cell: str) -> Path:
        """The resolved config the per-GPU launcher hands to one cell's process (JSON)."""
        return self.logs / f"{cell}.config.json"

    def figure(self, title: str) -> Path:
        """The PNG of one report figure, named from its section title (``ROC curves`` -> ``roc_curves.png``;
        anything but letters and digits becomes one ``_``, so a title's ``:`` or ``(`` never reaches a file name)."""
        import re

        return self.figures / f"{re.sub(r'[^a-z0-9]+', '_', title.lower()).strip('_')}.png"

    def link(self, path: Path) -> str:
        """``path`` relative to the folder, as ``report.md`` links it."""
        return path.relative_to(self.path).as_posix()

    def is_phantom(self) -> bool:
        """The folder holds a phantom form (its dataset's marker is there)."""
        return self.data_marker.is_file()

    def report_files(self) -> list[Path]:
        """What ``study report`` writes at the folder's top (the figures go to :attr:`figures`)."""
        return [self.report_html, self.report_md, self.result_file]
