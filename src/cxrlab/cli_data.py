"""``cxrlab data ...``: inspect datasets (sources, summary, check) before training on them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cxrlab.errors import CxrlabError

console = Console()
err_console = Console(stderr=True)

data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets: summary, check, sources.")

SourceOpt = Annotated[str, typer.Option("--source", "-s", help="Source name (cxrlab data sources).")]
RootOpt = Annotated[Path, typer.Option("--root", "-r", help="Dataset folder (or file for csv/npz).")]
LabelsOpt = Annotated[str | None, typer.Option(help="Comma-separated labels (default: the source's).")]
OptionOpt = Annotated[list[str] | None, typer.Option("--option", "-o", help="Source option key=value (repeatable).")]


def _manifest(source: str, root: Path, labels: str | None, option: list[str] | None, seed: int = 0):
    from cxrlab.config import parse_overrides
    from cxrlab.data.sources import load_source

    opts = parse_overrides(option or [])
    labs = [x.strip() for x in labels.split(",")] if labels else None
    return load_source(source, str(root), labels=labs, options=opts, seed=seed)


@data_app.command("sources")
def data_sources() -> None:
    """List the dataset layouts cxrlab reads."""
    from cxrlab.data.sources import _SOURCES

    for name, fn in sorted(_SOURCES.items()):
        doc = (sys.modules[fn.__module__].__doc__ or "").strip().splitlines()
        console.print(f"[bold]{name}[/bold]  {doc[0] if doc else ''}")


@data_app.command("summary")
def data_summary(source: Annotated[str | None, typer.Option("--source", "-s", help="Source name (cxrlab data sources).")] = None,
                 root: Annotated[Path | None, typer.Option("--root", "-r", help="Dataset folder (or file for csv/npz).")] = None,
                 labels: LabelsOpt = None, option: OptionOpt = None,
                 run: Annotated[Path | None, typer.Option(help="A run folder: show the split it trained on (split.json).")] = None,
                 json_out: Annotated[Path | None, typer.Option("--json", help="Write the summary as JSON.")] = None,
                 seed: Annotated[int, typer.Option(help="Seed for splits made by cxrlab.")] = 0) -> None:
    """Images, patients, positives and prevalence per split, and patient overlap (Wollek et al. 2023, Table 1).

    Of a dataset (--source, --root) or of a run's own split (--run).
    """
    from cxrlab.data.summary import summarize
    from cxrlab.workflows.outputs import save_json

    if run is not None:
        from cxrlab.workflows.facts import run_split_summary

        s = run_split_summary(run)
        title = f"run {run}: its split ({s['images']} images, {s['patients']} patients)"
    elif source and root:
        s = summarize(_manifest(source, root, labels, option, seed))
        title = f"{source} at {root}  ({s['images']} images, {s['patients']} patients)"
    else:
        raise CxrlabError("data summary needs --source and --root, or --run RUN")
    t = Table(title=title)
    t.add_column("label")
    for sp in ("train", "val", "test"):
        t.add_column(sp, justify="right")
    for lab in s["labels"]:
        cells = []
        for sp in ("train", "val", "test"):
            d = s["splits"][sp]
            unc = d["uncertain"][lab]
            prev = d.get("prevalence", {}).get(lab)
            cells.append(f"{d['positive'][lab]}" + (f" ({prev:.1%})" if prev is not None and prev == prev else "")
                         + (f" (+{unc} unc.)" if unc else ""))
        t.add_row(lab, *cells)
    t.add_section()
    t.add_row("images", *[str(s["splits"][sp]["images"]) for sp in ("train", "val", "test")])
    t.add_row("patients", *[str(s["splits"][sp]["patients"]) for sp in ("train", "val", "test")])
    console.print(t)
    console.print("positives per label (prevalence = positives / images)")
    if s.get("split_method"):
        console.print(f"split: {s['split_method']}", highlight=False, soft_wrap=True)
    overlap = ", ".join(f"{k} {v}" for k, v in s["patient_overlap"].items())
    shared = any(s["patient_overlap"].values())
    console.print(("[red]patients shared between splits:[/red] " if shared else "patient overlap between splits: ")
                  + overlap, highlight=False)
    if shared:
        for k, ids in s.get("overlap_examples", {}).items():
            if ids:
                console.print(f"  {k}, e.g. {', '.join(ids)}", highlight=False)
    if json_out:
        console.print(f"wrote {save_json(json_out, s)}", highlight=False, soft_wrap=True)


@data_app.command("check")
def data_check(source: SourceOpt, root: RootOpt, labels: LabelsOpt = None, option: OptionOpt = None,
               workers: Annotated[int, typer.Option(help="Processes (0 = all cores).")] = 0) -> None:
    """Decode every image; list all unreadable, truncated, empty or wrongly-shaped files (exit 1 if any)."""
    from cxrlab.data.check import check_images

    m = _manifest(source, root, labels, option)
    problems = check_images(m.paths(m.frame), workers)
    for p in problems:
        err_console.print(p, highlight=False, soft_wrap=True)
    if problems:
        err_console.print(f"[red]{len(problems)} of {len(m.frame)} images have problems[/red]")
        raise typer.Exit(1)
    console.print(f"all {len(m.frame)} images read fine")


