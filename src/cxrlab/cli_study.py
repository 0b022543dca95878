"""``cxrlab study ...``: a paper's whole comparison as one command and one report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()

study_app = typer.Typer(no_args_is_help=True, help="Studies: a grid of runs, one report with CIs and tests.")


@study_app.command("run")
def study_run(
    study: Annotated[str, typer.Argument(help="Study file (YAML) or preset name (cxrlab study presets).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides for every cell")] = None,
    root: Annotated[list[str] | None, typer.Option(metavar="DIR|SITE=DIR", help="Dataset folder (sets data.root of "
                                                   "every cell); a cross-site study: SITE=DIR, once per site.")] = None,
    phantom: Annotated[bool, typer.Option(help="Run the study's small form on the built-in phantom.")] = False,
    out: Annotated[Path, typer.Option(help="Parent folder of studies/<name>.")] = Path("studies"),
    launcher: Annotated[str, typer.Option(help="local (one cell per visible GPU, else sequential), slurm "
                                                 "(submitit job array), submitit-local (submitit here).")] = "local",
    devices: Annotated[str | None, typer.Option(help="local launcher: comma-separated CUDA devices, one cell "
                                                      "on each at a time (default: every visible GPU).")] = None,
    slurm: Annotated[list[str] | None, typer.Option(help="submitit parameter key=value, e.g. "
                                                          "slurm_partition=gpu, gpus_per_node=1 (repeatable).")] = None,
    masks: Annotated[Path | None, typer.Option(help="Lung/heart masks for every cell's audit (a PNG folder, a "
                                                    "CheXmask CSV or a COCO RLE JSON; phantom forms have their own).")] = None,
) -> None:
    """Train every cell not yet done (a killed study resumes), make the post steps' cells, write the report."""
    from cxrlab.config import parse_overrides
    from cxrlab.workflows.study import run_study

    params = parse_overrides(slurm or [])
    if devices is not None:
        params["devices"] = [d.strip() for d in devices.split(",") if d.strip()]
    report = run_study(study, list(root or []), overrides or [], phantom, out, launcher, params,
                       masks=masks)
    _wrote(report)


@study_app.command("report")
def study_report_cmd(
    folder: Annotated[Path, typer.Argument(help="studies/<name> folder.")],
    n_boot: Annotated[int | None, typer.Option(help="Bootstrap resamples B of every CI and paired test "
                                                     "(default: the study's n_boot, 1000); cells evaluated "
                                                     "with another B are re-evaluated.")] = None,
) -> None:
    """Re-write the study report from the finished cells' run folders (it changes nothing under runs/)."""
    from cxrlab.workflows.study_report import study_report

    _wrote(study_report(folder, n_boot=n_boot))


def _wrote(report: Path) -> None:
    from cxrlab.studies.folder import StudyFolder

    console.print("\n".join(f"wrote {p}" for p in StudyFolder(report.parent).report_files()))


@study_app.command("presets")
def study_presets() -> None:
    """List the studies shipped with cxrlab (one per paper)."""
    from cxrlab.studies.spec import list_presets, load_study

    for name, path in sorted(list_presets().items()):
        spec, _ = load_study(path)
        console.print(f"[bold]{name}[/bold]  {spec.title}  ({len(spec.grid())} cells)")
