"""The ``cxrlab`` command line: a thin typer layer over the Python API.

Heavy imports (torch, timm, matplotlib) happen inside the commands so that
``cxrlab --help`` is instant.  A :class:`~cxrlab.errors.CxrlabError` becomes
one line on stderr and exit status 2.  The commands spell no run-folder file name:
they print what the workflow wrote (:func:`cxrlab.workflows.outputs.outputs`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cxrlab import cli_show as show
from cxrlab.errors import CxrlabError

console = Console()
err_console = Console(stderr=True)


class _Group(typer.core.TyperGroup):
    """A user mistake (:class:`CxrlabError`) ends as one line on stderr and exit status 2, never a traceback."""

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except CxrlabError as e:
            err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="cxrlab: chest X-ray classification research toolkit.")


_wrote = show.wrote


def _out_folder(out: Path) -> Path:
    """``--out`` of demo and phantom: a folder (made if missing); a file there, or above it, is one line."""
    there = next((p for p in (out, *out.parents) if p.exists()), None)
    if there is not None and not there.is_dir():
        raise CxrlabError(f"--out {out}: {'is' if there == out else f'{there} is'} a file; give a folder "
                          "(made if missing)")
    return out


def _runs_exist(value: Path | list[Path] | None) -> Path | list[Path] | None:
    """Callback of every RUN argument: a folder that does not exist is one line, "no such run folder: X"."""
    if value:
        from cxrlab.workflows.common import run_folder

        for v in value if isinstance(value, list) else [value]:
            run_folder(v)
    return value


def _version(value: bool) -> None:
    if value:
        from cxrlab import __version__

        console.print(f"cxrlab {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print cxrlab's version and exit.")] = False) -> None:
    """cxrlab: chest X-ray classification research toolkit."""


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the phantom data, run and summary.json.")] = Path("cxrlab-demo"),
    n: Annotated[int, typer.Option(help="Number of phantom images.")] = 2400,
    size: Annotated[int, typer.Option(help="Phantom image size in pixels.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed for the phantom and the training.")] = 0,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value config overrides, e.g. train.epochs=3")] = None,
) -> None:
    """Phantom -> train -> evaluate -> explain -> report, on a CPU in minutes."""
    from cxrlab.workflows.demo import run_demo
    from cxrlab.workflows.outputs import outputs

    _out_folder(out)
    with outputs() as written:
        summary = run_demo(out, n=n, size=size, seed=seed, overrides=overrides or [])
    show.run_summary(summary)
    console.print(f"wall time {summary['wall_seconds']:.0f} s")
    _wrote(written.shown())
    console.print(f"report:  [bold]{summary['report']}[/bold]")
    run = Path(summary["report"]).parent
    console.print(f"next:    cxrlab audit {run}  (where the model looks; the phantom has lung masks)\n"
                  f"         cxrlab subgroups {run}, cxrlab serve {run}, cxrlab evaluate {run} --on SOURCE "
                  "--root DIR", highlight=False, soft_wrap=True)


@app.command()
def phantom(
    out: Annotated[Path, typer.Option(help="Target folder.")],
    kind: Annotated[str, typer.Option(help="Layout: nih14 | chexpert | kermany | cxr5 | tbx11k | mimic | padchest | vindr | rsna | siim | nlmtb (the real dataset whose files it imitates).")] = "nih14",
    n: Annotated[int, typer.Option(help="Number of images (studies for chexpert and mimic; for nlmtb, images in each of its two sets, Shenzhen and Montgomery).")] = 1000,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 256,
    seed: Annotated[int, typer.Option(help="Dataset seed.")] = 0,
    subtle: Annotated[bool, typer.Option(help="nih14: small, faint nodules (lost at low resolution).")] = False,
    workers: Annotated[int, typer.Option(help="Processes (0 = all cores).")] = 0,
    site: Annotated[str | None, typer.Option(help="nih14/chexpert: the hospital, A (default), B (other "
                                             "exposure, noise, field of view, burned-in text, half the prevalence) "
                                             "or C (under-exposed, a wider field, 1.4x the prevalence).")] = None,
    masks: Annotated[bool, typer.Option(help="nih14/kermany/cxr5: also write the exact lung and heart masks "
                                        "(masks/<structure>/<image>.png, original pixels).")] = False,
    shortcut: Annotated[str | None, typer.Option(help="nih14: plant a shortcut, LABEL:POS_RATE:NEG_RATE (e.g. "
                                                 "Effusion:0.9:0.1): burned-in text outside the lungs in that "
                                                 "share of the label's positives and negatives.")] = None,
    subgroup_gap: Annotated[str | None, typer.Option(help="nih14: plant a subgroup effect, ATTR=VALUE:FACTOR (e.g. "
                                                     "sex=F:0.5, age=60-89:0.4): that group's lesions drawn at "
                                                     "FACTOR intensity, labels unchanged.")] = None,
) -> None:
    """Write a synthetic CXR dataset with known lesions in a real dataset's layout (read by its source)."""
    from cxrlab.data.phantom_dataset import KINDS, write_phantom_dataset

    if size < 32:
        raise CxrlabError(f"--size must be >= 32, got {size}")
    if kind not in KINDS:
        raise CxrlabError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    opts = {"subtle": True} if subtle else {}
    if subtle and kind != "nih14":
        raise CxrlabError("--subtle applies to --kind nih14 only")
    if site is not None:
        if kind not in ("nih14", "chexpert"):
            raise CxrlabError(f"--site applies to --kind nih14 or chexpert, not {kind}")
        opts["site"] = site
    if masks:
        if kind not in ("nih14", "kermany", "cxr5"):
            raise CxrlabError(f"--masks applies to --kind nih14, kermany or cxr5, not {kind}")
        opts["masks"] = True
    if shortcut is not None:
        from cxrlab.data.phantom import LABELS
        from cxrlab.data.phantom_layouts.shortcut import Shortcut

        if kind != "nih14":
            raise CxrlabError(f"--shortcut applies to --kind nih14 only, not {kind}")
        opts["shortcut"] = Shortcut.parse(shortcut, LABELS)
    if subgroup_gap is not None:
        from cxrlab.data.phantom_layouts.subgroup import SubgroupGap

        if kind != "nih14":
            raise CxrlabError(f"--subgroup-gap applies to --kind nih14 only, not {kind}")
        opts["subgroup_gap"] = SubgroupGap.parse(subgroup_gap)
    _out_folder(out)
    ps = write_phantom_dataset(kind, out, n=n, size=size, seed=seed, workers=workers or None, **opts)
    console.print(f"wrote a {kind} phantom ({n}) to {ps.root}\nread it with data.source={ps.source} "
                  f"data.root={ps.root}")


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML recipe, e.g. recipes/phantom_simple_cnn.yaml (see recipes/); key=value pairs then override it.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. train.lr=1e-3")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run of the same name.")] = False,
) -> None:
    """Train, evaluate, explain and report one experiment into runs/<name>/."""
    import os
    from contextlib import nullcontext

    from cxrlab.config import load_config
    from cxrlab.locks import FolderLock
    from cxrlab.workflows.outputs import outputs

    cfg = load_config(config, overrides or [])
    # the run folder's lock before torch is imported: a second trainer on this name is refused in
    # well under a second (run_experiment takes the same lock again, re-entrantly)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with FolderLock(Path(cfg.runs_dir) / cfg.name) if main_rank else nullcontext():
        from cxrlab.workflows import run_experiment

        console.print(f"training {cfg.model.name} on {cfg.data.source} at {cfg.data.root or '(data.root unset)'}, "
                      f"{cfg.data.image_size} px, {cfg.train.epochs} epochs -> {Path(cfg.runs_dir) / cfg.name}")
        with outputs() as written:
            summary = run_experiment(cfg, resume=resume, overwrite=overwrite)
    if not summary:  # a torchrun worker other than rank 0
        return
    show.run_summary(summary)
    _wrote(written.shown())
    console.print(f"run folder: [bold]{Path(cfg.runs_dir) / cfg.name}[/bold]")


def _prevalences(pairs: list[str]) -> dict[str, float] | None:
    """``["Pneumonia=0.05"]`` -> ``{"Pneumonia": 0.05}``; one line for a malformed pair."""
    out: dict[str, float] = {}
    for pair in pairs:
        label, sep, value = pair.partition("=")
        try:
            p = float(value)
        except ValueError:
            p = -1.0
        if not sep or not label or not 0 < p < 1:
            raise CxrlabError(f"--prevalence {pair!r}: expected LABEL=P with 0 < P < 1, e.g. Pneumonia=0.05")
        out[label] = p
    return out or None


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder (runs/<name>).", callback=_runs_exist)],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the evaluation here.")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the resampling.")] = 0,
    on: Annotated[str | None, typer.Option("--on", help="Score the run on another dataset: its source name "
                                           "(nih14, chexpert, csv, ...); writes RUN/external/NAME/.")] = None,
    root: Annotated[Path | None, typer.Option(help="--on: the other dataset's folder in its source's layout.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="--on: a source option key=value "
                                                     "(as data.options), repeatable.")] = None,
    name: Annotated[str | None, typer.Option(help="--on: the folder under RUN/external/ (default: the source).")] = None,
    all_images: Annotated[bool, typer.Option(help="--on: score every image, not only the target's test split.")] = False,
    recalibrate_fraction: Annotated[float, typer.Option(help="--on: share of the target's patients that "
                                                        "thresholds and Platt scaling are refitted on (never scored); "
                                                        "0: off.")] = 0.2,
    exclude_duplicates: Annotated[bool, typer.Option(help="--on: drop target images that copy a training image "
                                                     "(exactly or nearly) from scoring.")] = False,
    duplicate_check: Annotated[bool, typer.Option(help="--on: check the target for copies of training images "
                                                  "(--no-duplicate-check skips it, e.g. for very large sets).")] = True,
    subgroups: Annotated[str | None, typer.Option(
        "--subgroups", help="--on: attributes of the subgroup analysis at the run's thresholds, e.g. sex,age,view "
        "(default: every one the target records).")] = None,
    threshold_rule: Annotated[str | None, typer.Option(
        "--threshold-rule", help="Re-choose thresholds on validation: youden, max_f1, sensitivity:T, "
        "specificity:T or ppv:T (default: the run's evaluate.threshold_rule).")] = None,
    prevalence: Annotated[list[str] | None, typer.Option(
        "--prevalence", help="LABEL=P: also give PPV and NPV at this deployment prevalence; repeatable.")] = None,
    calibration: Annotated[str | None, typer.Option(
        "--calibration", help="Refit the calibration on validation: temperature, platt, isotonic or none "
        "(default: keep the run's).")] = None,
) -> None:
    """AUCs with 95% CIs, thresholds from validation, sensitivity/specificity (binary: PPV, NPV, confusion).

    With --on SOURCE --root DIR: the run on another dataset (external validation: label map, prevalence and composition shift, transported and recalibrated results; docs/external.md).
    """
    from cxrlab.workflows import evaluate_run
    from cxrlab.workflows.common import run_record
    from cxrlab.workflows.outputs import outputs, save_json

    if on is not None or root is not None:
        from cxrlab.report import present
        from cxrlab.report.external_report import (
            duplicate_line,
            label_line,
            scored_hint,
            view_warning,
        )
        from cxrlab.workflows.external import evaluate_external, parse_options

        if on is None or root is None:
            raise CxrlabError("external evaluation needs both --on SOURCE and --root DIR")
        with outputs() as written:
            result = evaluate_external(run, on, root, parse_options(option or []), name=name, all_images=all_images,
                                       recalibrate_fraction=recalibrate_fraction, n_boot=n_boot, seed=seed,
                                       duplicate_check=duplicate_check, exclude_duplicates=exclude_duplicates,
                                       subgroups=subgroups.split(",") if subgroups is not None else None)
            if json_out:
                save_json(json_out, result.to_dict())
        for lab in result.labels.values():
            console.print(label_line(lab, result.n_images), highlight=False)
        console.print(f"macro AUC on {on} over {', '.join(result.macro_labels) or 'no label'} (both classes on both "
                      f"sides): {present.ci(result.macro_auc)} vs {present.ci(result.run_macro_auc)} on the run's test "
                      f"split ({result.n_images} images scored)", highlight=False)
        console.print(duplicate_line(result), highlight=False)
        for warning in (scored_hint(result), view_warning(result)):
            if warning:
                console.print(f"warning: {warning}", highlight=False)
        _wrote(written.shown())
        return
    with outputs() as written:  # evaluation, re-chosen thresholds (where validation allows), figures, report
        ev = evaluate_run(run, n_boot=n_boot, seed=seed, threshold_rule=threshold_rule,
                          prevalence=_prevalences(prevalence or []), calibration=calibration)
        if json_out:
            save_json(json_out, ev)
    show.evaluation(run, ev, run_record(run).task)
    _wrote(written.shown())


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run folders; each is compared with the first.", callback=_runs_exist)],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the comparison as JSON.")] = None,
    out: Annotated[Path | None, typer.Option(help="The HTML page (default RUN_A/compare.html).")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the macro-AUC difference.")] = 1000,
) -> None:
    """DeLong test per label (Holm-adjusted), paired bootstrap of the macro-AUC difference, an HTML page.

    The page has overlaid ROC curves and a forest plot of the differences (RUN_A/compare.html unless --out).
    """
    from cxrlab.workflows import compare_runs
    from cxrlab.workflows.evaluate import compare_page
    from cxrlab.workflows.outputs import outputs, save_json

    if len(runs) < 2:
        raise CxrlabError("compare needs at least two run folders")
    results = [compare_runs(runs[0], other, n_boot=n_boot) for other in runs[1:]]
    for r in results:
        show.comparison(r)
    with outputs() as written:
        compare_page(runs[0], runs[1:], results, out)
        if json_out:
            save_json(json_out, results if len(results) > 1 else results[0])
    _wrote(written.shown())


@app.command()
def explain(
    run: Annotated[Path, typer.Argument(help="Run folder.", callback=_runs_exist)],
    images: Annotated[list[Path], typer.Option("--images", "-i", help="Image files (PNG/JPEG/DICOM), repeatable.")],
    method: Annotated[str, typer.Option(help="gradcam | layergradcam | gradcam++ | saliency")] = "gradcam",
    labels: Annotated[str | None, typer.Option(help="Comma-separated labels to explain (multi-label).")] = None,
    top: Annotated[int, typer.Option(help="Explain the N most probable labels when --labels is not given.")] = 3,
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN/explain).")] = None,
) -> None:
    """Attribution overlays for any images, per label (multi-label) or for the predicted class."""
    from cxrlab.workflows import explain_images
    from cxrlab.workflows.outputs import outputs

    labs = [x.strip() for x in labels.split(",")] if labels else None
    with outputs() as written:  # the overlays, and the report where it shows RUN/explain
        explain_images(run, images, out, method=method, labels=labs, top=top)
    _wrote(written.shown())


@app.command()
def localize(
    run: Annotated[Path, typer.Argument(help="Run folder.", callback=_runs_exist)],
    boxes: Annotated[Path | None, typer.Option(help="Box list (NIH BBox_List_2017.csv format); default: the dataset's.")] = None,
    method: Annotated[str, typer.Option(help="gradcam | layergradcam | gradcam++ | saliency")] = "gradcam",
    threshold: Annotated[float, typer.Option(help="CAM threshold after min-max normalisation.")] = 0.5,
    iou: Annotated[float, typer.Option(help="IoU for a hit.")] = 0.1,
    max_images: Annotated[int | None, typer.Option(help="Score at most N boxed images.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the scores as JSON.")] = None,
) -> None:
    """CAM -> boxes -> IoU against true boxes: per-class precision and accuracy vs random boxes."""
    from cxrlab.explain.localize import matching_sentence
    from cxrlab.workflows import localize_run
    from cxrlab.workflows.outputs import outputs, save_json

    with outputs() as written:
        s = localize_run(run, boxes, method=method, threshold=threshold, min_iou=iou, max_cases=max_images)
        if json_out:
            save_json(json_out, s)
    show.localization(run, s, method, iou)
    console.print(matching_sentence(s["matching"], str(boxes) if boxes else "the dataset's boxes"), highlight=False)
    _wrote(written.shown())


@app.command()
def audit(
    run: Annotated[Path, typer.Argument(help="Run folder.", callback=_runs_exist)],
    masks: Annotated[Path | None, typer.Option(help="Lung/heart masks: a PNG folder, a CheXmask CSV or a COCO RLE "
                                                    "JSON; default DATA_ROOT/masks (a phantom written with --masks).")] = None,
    method: Annotated[str, typer.Option(help="gradcam | layergradcam | gradcam++ | saliency")] = "gradcam",
    level: Annotated[str, typer.Option(help="Where a CAM is cut into a region for the mIoU, chosen on the validation split (never on test): otsu (Otsu's threshold of the validation CAMs) | best (the level of the best validation mIoU).")] = "otsu",
    n_boot: Annotated[int, typer.Option(help="Patient-bootstrap resamples for the CIs.")] = 1000,
    sanity: Annotated[int, typer.Option(help="Images for the randomisation and deletion checks (0: skip).")] = 64,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the result here.")] = None,
) -> None:
    """Where the model looks: CAM energy in the lungs vs chance, shortcut suspects (docs/audit.md).

    Also the pointing game and mIoU on boxes, and randomisation and deletion checks of the maps.
    """
    from cxrlab.report import present
    from cxrlab.workflows.audit import audit_run
    from cxrlab.workflows.outputs import outputs, save_json

    with outputs() as written:
        result = audit_run(run, masks, method=method, level=level, n_boot=n_boot, sanity=sanity)
        if json_out:
            save_json(json_out, result)
    t = Table(title=f"{method}: CAM energy inside the lungs (test positives, 95% CI)")
    for col in ("label", "n", "lung share", "uniform map", "pointing hit", "flagged"):
        t.add_column(col)
    for lab, a in result.per_label.items():
        t.add_row(lab, str(a.n), present.ci(a.lung_share), present.value(a.uniform_lung_share),
                  present.ci(a.target.hit) if a.target else present.NA, "YES" if a.flagged else "")
    console.print(t)
    if result.flagged:
        console.print(f"[red]shortcut suspects:[/red] {', '.join(result.flagged)} (lung share below a uniform map's)")
    _wrote(written.shown())


@app.command()
def uncertainty(
    run: Annotated[Path, typer.Argument(help="Run folder (trained with model.dropout > 0).", callback=_runs_exist)],
    passes: Annotated[int, typer.Option(help="Stochastic forward passes (the fusion project report used 25 or 100).")] = 25,
    threshold: Annotated[float, typer.Option(help="Std above which a prediction is 'uncertain'.")] = 0.1,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the summary here.")] = None,
) -> None:
    """Monte-Carlo dropout: mean/std per label, uncertain flags, AUC on confident vs uncertain."""
    from cxrlab.workflows import uncertainty_run
    from cxrlab.workflows.outputs import outputs, save_json

    with outputs() as written:
        s = uncertainty_run(run, passes, threshold)
        if json_out:
            save_json(json_out, s)
    show.uncertainty(run, s, passes, threshold)
    _wrote(written.shown())


@app.command()
def subgroups(
    run: Annotated[Path, typer.Argument(help="Run folder (multi-label or binary).", callback=_runs_exist)],
    by: Annotated[str, typer.Option(help="Attributes to group by, comma-separated: sex, age, view, source, site "
                                         "(and their two-way intersections).")] = "sex,age,view,source",
    age_bins: Annotated[str, typer.Option(help="Age bin edges in years; must cover every age.")] = "0,40,60,80,120",
    n_boot: Annotated[int, typer.Option(help="Patient-level bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the resampling.")] = 0,
    intersections: Annotated[bool, typer.Option(help="Also every two-way intersection.")] = True,
) -> None:
    """Per patient group: AUC, TPR/FPR/PPV with CIs at the run's thresholds, gaps, the worst group per label.

    Gaps to the rest and to the median group (docs/subgroups.md); writes RUN/subgroups.json, forest plots and a report section.
    """
    from cxrlab.workflows.outputs import outputs
    from cxrlab.workflows.subgroups import subgroups_run

    try:
        edges = [float(v) for v in age_bins.split(",") if v.strip()]
    except ValueError:
        raise CxrlabError(f"--age-bins must be numbers separated by commas, got {age_bins!r}") from None
    with outputs() as written:
        r = subgroups_run(run, by.split(","), edges, n_boot=n_boot, seed=seed, intersections=intersections)
    from cxrlab.report.subgroups_report import unranked_note, worst_rows

    t = Table(title=f"{run}: worst group per label (one-attribute groups, AUC; gap = group - rest)")
    for col in ("label", "worst group", "AUC [95% CI]", "gap [95% CI]", "p"):
        t.add_column(col)
    for row in worst_rows(r):  # the page's rows: "no gap" where the ranked groups tie
        t.add_row(*row)
    console.print(t)
    note = unranked_note(r)
    if note:
        console.print(note, highlight=False)
    _wrote(written.shown())


@app.command()
def ensemble(
    runs: Annotated[list[Path], typer.Argument(help="Run folders tested on the same images.", callback=_runs_exist)],
    out: Annotated[Path, typer.Option(help="Folder for the ensemble's predictions (evaluate/compare it).")],
    how: Annotated[str, typer.Option(help="mean | max")] = "mean",
    by: Annotated[str | None, typer.Option(help="Fuse rows by this column, e.g. 'study' (frontal+lateral).")] = None,
) -> None:
    """Average (or max) several runs' predictions, optionally fused per study."""
    from cxrlab.workflows import ensemble_runs
    from cxrlab.workflows.outputs import outputs

    with outputs() as written:
        path = ensemble_runs(runs, out, how=how, by=by)
    _wrote(written.shown())
    console.print(f"next: cxrlab evaluate {path}")


from cxrlab.cli_data import data_app  # noqa: E402  (a sub-app of its own module)

app.add_typer(data_app, name="data")
from cxrlab.cli_study import study_app  # noqa: E402

app.add_typer(study_app, name="study")


@app.command()
def prepare(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML recipe.")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides")] = None,
) -> None:
    """Decode every image once into the resized uint8 cache that training reads (resumable)."""
    import time

    from cxrlab.config import load_config
    from cxrlab.workflows.experiment import prepare_dataset

    cfg = load_config(config, overrides or [])
    tic = time.perf_counter()
    cache = prepare_dataset(cfg)
    mb = cache.images.nbytes / 2**20
    console.print(f"cache ready: {len(cache.ids)} images at {cfg.data.image_size} px, {mb:.0f} MiB, "
                  f"{time.perf_counter() - tic:.1f} s")
    _wrote([cache.folder])


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder.", callback=_runs_exist)],
    images: Annotated[list[Path], typer.Option("--images", "-i", help="Image files (PNG/JPEG/DICOM), folders (recursive) or a CSV with a path column; repeatable.")],
    engine: Annotated[str, typer.Option(help="torch, or onnx (after cxrlab export).")] = "torch",
    tta: Annotated[bool, typer.Option(help="Average with the mirrored image.")] = False,
    csv: Annotated[Path | None, typer.Option(hidden=True, help="Old name of --out (a .csv file).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the predictions to FILE.csv or FILE.json.")] = None,
    show: Annotated[int, typer.Option(help="Print at most this many rows.")] = 30,
) -> None:
    """Probabilities per label, the predicted labels (at the thresholds chosen on validation), OOD score."""
    from cxrlab.workflows.predict import label_columns, ood_note, predict_images, save_predictions

    table = predict_images(run, images, engine=engine, tta=tta)
    columns = label_columns(table)
    labels = list(columns)
    wide = len(labels) <= 6  # a column per label; more labels: the three most probable in one column
    t = Table(title=f"{run} ({engine})")
    t.add_column("image")
    for lab in labels if wide else []:
        t.add_column(f"P({lab})", justify="right")
    if not wide:
        t.add_column(f"highest probabilities (of {len(labels)} labels)")
    t.add_column("decision", overflow="fold")
    has_ood = "ood_score" in table.columns
    if has_ood:
        t.add_column("OOD score", justify="right")
    for _, row in table.head(show).iterrows():
        p = {lab: float(row[col]) for lab, col in columns.items()}
        probs = ([f"{p[lab]:.3f}" for lab in labels] if wide else
                 [", ".join(f"{lab} {v:.3f}" for lab, v in sorted(p.items(), key=lambda kv: -kv[1])[:3])])
        ood = [f"{row['ood_score']:.1f}" + (" [yellow]unusual[/yellow]" if row["ood_flag"] else "")] if has_ood else []
        t.add_row(Path(row["image"]).name, *probs, row["prediction"], *ood)
    console.print(t)
    if len(table) > show:
        console.print(f"... and {len(table) - show} more rows")
    if has_ood:
        note = ood_note(run)
        if note:
            console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    _wrote([save_predictions(table, p) for p in (csv, out) if p])


@app.command()
def card(run: Annotated[Path, typer.Argument(help="Run folder.", callback=_runs_exist)]) -> None:
    """Write RUN/card.md and RUN/metadata.json (fits RUN/ood.json first for runs trained without it)."""
    from cxrlab.workflows.card import write_card
    from cxrlab.workflows.outputs import outputs

    with outputs() as written:
        write_card(run)
    _wrote(written.shown())


@app.command()
def serve(
    run: Annotated[Path, typer.Argument(help="Run folder.", callback=_runs_exist)],
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    engine: Annotated[str, typer.Option(help="auto (ONNX Runtime when RUN/model.onnx exists) | torch | onnx")] = "auto",
    token: Annotated[str | None, typer.Option(envvar="CXRLAB_TOKEN", help="Require 'Authorization: Bearer T'.")] = None,
    max_files: Annotated[int, typer.Option(help="Images per request.")] = 16,
    max_file_mb: Annotated[int, typer.Option(help="Size of one upload in MiB.")] = 32,
    max_pending: Annotated[int, typer.Option(help="Requests admitted at once (once their body is in); more get 503.")] = 32,
    max_per_client: Annotated[int, typer.Option(help="Requests from one client address at once; more get 429.")] = 4,
    body_timeout: Annotated[float, typer.Option(help="Seconds a request body may take to arrive; then 408.")] = 30.0,
) -> None:
    """A local web page and JSON API for a run: predict, explain, model card, OOD warning."""
    from cxrlab.serve.app import serve_run
    from cxrlab.serve.limits import Limits

    limits = Limits(max_files=max_files, max_file_bytes=max_file_mb * 2**20, max_pending=max_pending,
                    max_per_client=max_per_client, body_timeout=body_timeout)  # the body limit follows the file's
    serve_run(run, host, port, engine, token, limits,
              announce=lambda url: console.print(f"serving {run} at [bold]{url}[/bold] (API docs {url}docs); "
                                                 "Ctrl+C stops"))


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder.", callback=_runs_exist)],
    out: Annotated[Path | None, typer.Option(help="Output file (default RUN/model.onnx).")] = None,
) -> None:
    """Export the run's best model to ONNX for CPU inference with ONNX Runtime."""
    from cxrlab.workflows import export_onnx

    console.print(f"wrote {export_onnx(run, out)}")


@app.command()
def report(run: Annotated[Path, typer.Argument(help="Run folder.", callback=_runs_exist)]) -> None:
    """Re-render RUN/report.html from the run folder (after evaluate, localize, uncertainty, explain)."""
    from cxrlab.workflows import report_run

    path, hint = report_run(run)
    console.print(f"wrote {path}")
    if hint:
        console.print(f"[yellow]note:[/yellow] {hint}")


@app.command()
def version() -> None:
    """Print the versions cxrlab runs with."""
    from cxrlab.workflows.facts import versions

    for k, v in versions().items():
        console.print(f"{k}: {v}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except CxrlabError as e:  # raised outside a command (e.g. while parsing)
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; completed epochs are saved (use --resume to continue)")
        sys.exit(130)
