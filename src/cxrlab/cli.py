"""The ``cxrlab`` command line: a thin typer layer over the Python API.

Heavy imports (torch, timm, matplotlib) happen inside the commands so that
``cxrlab --help`` is instant.  A :class:`~cxrlab.errors.CxrlabError` becomes
one line on stderr and exit status 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

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


def _fmt(v: object) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _wrote(paths: list[Path]) -> None:
    """Every command says what it wrote where."""
    for p in paths:
        console.print(f"wrote {p}")


def print_summary(summary: dict) -> None:
    """A table of per-label AUC and, where present, localisation vs random boxes."""
    loc = summary.get("localization") or {}
    per = loc.get("per_class", {})
    t = Table(title=f"{summary.get('name', 'run')}: test split")
    for col in ("label", "AUC", "loc. accuracy", "random boxes"):
        t.add_column(col, justify="left" if col == "label" else "right")
    for lab, auc in summary["per_label_auc"].items():
        p = per.get(lab, {})
        t.add_row(lab, _fmt(auc), _fmt(p.get("accuracy", "-")), _fmt(p.get("random_accuracy", "-")))
    t.add_section()
    t.add_row("[bold]mean", f"[bold]{_fmt(summary['macro_auc'])}",
              _fmt(loc.get("mean_accuracy", "-")), _fmt(loc.get("random_mean_accuracy", "-")))
    console.print(t)


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

    summary = run_demo(out, n=n, size=size, seed=seed, overrides=overrides or [])
    print_summary(summary)
    console.print(f"wall time {summary['wall_seconds']:.0f} s")
    console.print(f"summary: {out / 'summary.json'}")
    console.print(f"report:  [bold]{summary['report']}[/bold]")


@app.command()
def phantom(
    out: Annotated[Path, typer.Option(help="Target folder (NIH ChestX-ray14 layout).")],
    n: Annotated[int, typer.Option(help="Number of images.")] = 1000,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 256,
    seed: Annotated[int, typer.Option(help="Dataset seed.")] = 0,
    test_fraction: Annotated[float, typer.Option(help="Fraction of patients in test_list.txt.")] = 0.2,
    workers: Annotated[int, typer.Option(help="Processes (0 = all cores).")] = 0,
) -> None:
    """Write a synthetic CXR dataset with known lesions and boxes in the NIH layout."""
    from cxrlab.data.phantom_dataset import write_phantom

    if size < 32:
        raise CxrlabError(f"--size must be >= 32, got {size}")
    write_phantom(out, n=n, size=size, seed=seed, test_fraction=test_fraction, workers=workers or None)
    console.print(f"wrote {n} images to {out}")


@app.command()
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML recipe (required; see recipes/).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. train.lr=1e-3")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run of the same name.")] = False,
) -> None:
    """Train, evaluate, explain and report one experiment into runs/<name>/."""
    from cxrlab.config import load_config
    from cxrlab.workflows import run_experiment

    if config is None:
        raise CxrlabError("train needs --config RECIPE (e.g. recipes/phantom_simple_cnn.yaml); "
                          "key=value pairs then override it")
    cfg = load_config(config, overrides or [])
    console.print(f"training {cfg.model.name} on {cfg.data.source} at {cfg.data.root or '(data.root unset)'}, "
                  f"{cfg.data.image_size} px, {cfg.train.epochs} epochs -> {Path(cfg.runs_dir) / cfg.name}")
    summary = run_experiment(cfg, resume=resume, overwrite=overwrite)
    if not summary:  # a torchrun worker other than rank 0
        return
    print_summary(summary)
    console.print(f"run folder: [bold]{Path(cfg.runs_dir) / cfg.name}[/bold]")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder (runs/<name>).")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the evaluation here.")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the resampling.")] = 0,
) -> None:
    """AUCs with 95% CIs, thresholds from validation, sensitivity/specificity, calibration."""
    from cxrlab.run import RunFolder
    from cxrlab.runio import atomic_write_json
    from cxrlab.workflows import evaluate_run

    ev = evaluate_run(run, n_boot=n_boot, seed=seed)
    task = RunFolder(run).read_model_record().task
    written = [RunFolder(run).evaluation_file]
    if json_out:
        written.append(atomic_write_json(json_out, ev))
    t = Table(title=f"{run}: test split (n = {ev['n']})")
    if task == "multiclass":
        for col in ("class", "precision", "recall", "F1", "AUC"):
            t.add_column(col, justify="left" if col == "class" else "right")
        for lab, d in ev["per_class"].items():
            t.add_row(lab, *(_fmt(d[k]) for k in ("precision", "recall", "f1", "auc")))
        console.print(t)
        a = ev["accuracy"]
        console.print(f"accuracy {a['value']:.3f} (95% CI {a['ci_low']:.3f}-{a['ci_high']:.3f})")
        _wrote(written)
        return
    for col in ("label", "AUC", "95% CI", "sens.", "spec.", "ECE"):
        t.add_column(col, justify="left" if col == "label" else "right")
    for lab, d in ev["per_label"].items():
        t.add_row(lab, _fmt(d["auc"]), f"{d['ci_low']:.3f}-{d['ci_high']:.3f}", _fmt(d["sensitivity"]),
                  _fmt(d["specificity"]), _fmt(d["ece"]))
    t.add_section()
    for k in ("macro_auc", "micro_auc"):
        d = ev[k]
        t.add_row(k.split("_")[0], _fmt(d["auc"]), f"{_fmt(d['ci_low'])}-{_fmt(d['ci_high'])}", "", "", "")
    console.print(t)
    _wrote(written)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run folders; each is compared with the first.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the comparison as JSON.")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the macro-AUC difference.")] = 1000,
) -> None:
    """DeLong test per label (with Holm adjustment) and paired bootstrap of the macro-AUC difference."""
    from cxrlab.runio import atomic_write_json
    from cxrlab.workflows import compare_runs

    if len(runs) < 2:
        raise CxrlabError("compare needs at least two run folders")
    results = []
    for other in runs[1:]:
        r = compare_runs(runs[0], other, n_boot=n_boot)
        results.append(r)
        t = Table(title=f"{runs[0]} vs {other} (n = {r['n']})")
        for col in ("label", "AUC A", "AUC B", "diff", "p (DeLong)", "p (Holm)"):
            t.add_column(col, justify="left" if col == "label" else "right")
        for lab, d in r["per_label"].items():
            t.add_row(lab, _fmt(d["auc_a"]), _fmt(d["auc_b"]), f"{d['diff']:+.3f}", f"{d['p']:.3g}",
                      f"{d['p_holm']:.3g}")
        console.print(t)
        m = r["macro_auc_difference"]
        console.print(f"macro AUC difference {m['diff_mean']:+.4f} (95% CI {m['ci_low']:+.4f} to "
                      f"{m['ci_high']:+.4f}), paired bootstrap p = {m['p']:.3g}")
        console.print(r["note"])
    if json_out:
        atomic_write_json(json_out, results if len(results) > 1 else results[0])


@app.command()
def explain(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    images: Annotated[list[Path], typer.Option("--images", "-i", help="Image files (PNG/JPEG/DICOM), repeatable.")],
    method: Annotated[str, typer.Option(help="gradcam | layergradcam | gradcam++ | saliency")] = "gradcam",
    labels: Annotated[str | None, typer.Option(help="Comma-separated labels to explain (multi-label).")] = None,
    top: Annotated[int, typer.Option(help="Explain the N most probable labels when --labels is not given.")] = 3,
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN/explain).")] = None,
) -> None:
    """Attribution overlays for any images, per label (multi-label) or for the predicted class."""
    from cxrlab.workflows import explain_images

    labs = [x.strip() for x in labels.split(",")] if labels else None
    _wrote(explain_images(run, images, out, method=method, labels=labs, top=top))


@app.command()
def localize(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    boxes: Annotated[Path | None, typer.Option(help="Box list (NIH BBox_List_2017.csv format); default: the dataset's.")] = None,
    method: Annotated[str, typer.Option(help="gradcam | layergradcam | gradcam++ | saliency")] = "gradcam",
    threshold: Annotated[float, typer.Option(help="CAM threshold after min-max normalisation.")] = 0.5,
    iou: Annotated[float, typer.Option(help="IoU for a hit.")] = 0.1,
    max_images: Annotated[int | None, typer.Option(help="Score at most N boxed images.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the scores as JSON.")] = None,
) -> None:
    """CAM -> boxes -> IoU against true boxes: per-class precision and accuracy vs random boxes."""
    from cxrlab.run import RunFolder
    from cxrlab.runio import atomic_write_json
    from cxrlab.workflows import localize_run

    s = localize_run(run, boxes, method=method, threshold=threshold, min_iou=iou, max_cases=max_images)
    t = Table(title=f"{run}: {method} boxes, IoU >= {iou} ({s['cases']} cases)")
    for col in ("class", "n", "accuracy", "random acc.", "precision", "random prec."):
        t.add_column(col, justify="left" if col == "class" else "right")
    for lab, d in s["per_class"].items():
        t.add_row(lab, str(d["n"]), *(_fmt(d[k]) for k in ("accuracy", "random_accuracy", "precision",
                                                            "random_precision")))
    t.add_section()
    t.add_row("mean", str(s["cases"]), _fmt(s["mean_accuracy"]), _fmt(s["random_mean_accuracy"]),
              _fmt(s["mean_precision"]), _fmt(s["random_mean_precision"]))
    console.print(t)
    written = [RunFolder(run).localization_file(method)]
    if json_out:
        written.append(atomic_write_json(json_out, s))
    _wrote(written)


@app.command()
def uncertainty(
    run: Annotated[Path, typer.Argument(help="Run folder (trained with model.dropout > 0).")],
    passes: Annotated[int, typer.Option(help="Stochastic forward passes (seed 003: 25 or 100).")] = 25,
    threshold: Annotated[float, typer.Option(help="Std above which a prediction is 'uncertain'.")] = 0.1,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the summary here.")] = None,
) -> None:
    """Monte-Carlo dropout: mean/std per label, uncertain flags, AUC on confident vs uncertain."""
    from cxrlab.run import RunFolder
    from cxrlab.runio import atomic_write_json
    from cxrlab.workflows import uncertainty_run

    s = uncertainty_run(run, passes, threshold)
    t = Table(title=f"{run}: MC dropout, {passes} passes, std > {threshold} = uncertain")
    for col in ("label", "uncertain", "AUC all", "AUC confident", "AUC uncertain"):
        t.add_column(col, justify="left" if col == "label" else "right")
    for lab, d in s["per_label"].items():
        t.add_row(lab, f"{d['uncertain_fraction']:.1%}", _fmt(d["auc_all"]), _fmt(d["auc_confident"]),
                  _fmt(d["auc_uncertain"]))
    console.print(t)
    written = [RunFolder(run).uncertainty_file]
    if json_out:
        written.append(atomic_write_json(json_out, s))
    _wrote(written)


@app.command()
def ensemble(
    runs: Annotated[list[Path], typer.Argument(help="Run folders tested on the same images.")],
    out: Annotated[Path, typer.Option(help="Folder for the ensemble's predictions (evaluate/compare it).")],
    how: Annotated[str, typer.Option(help="mean | max")] = "mean",
    by: Annotated[str | None, typer.Option(help="Fuse rows by this column, e.g. 'study' (frontal+lateral).")] = None,
) -> None:
    """Average (or max) several runs' predictions, optionally fused per study."""
    from cxrlab.workflows import ensemble_runs

    path = ensemble_runs(runs, out, how=how, by=by)
    console.print(f"wrote {path / 'predictions.csv'}; next: cxrlab evaluate {path}")


from cxrlab.cli_data import data_app  # noqa: E402  (a sub-app of its own module)

app.add_typer(data_app, name="data")


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
                  f"{time.perf_counter() - tic:.1f} s\n{cache.folder}")


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    images: Annotated[list[Path], typer.Option("--images", "-i", help="Image files (PNG/JPEG/DICOM), folders (recursive) or a CSV with a path column; repeatable.")],
    engine: Annotated[str, typer.Option(help="torch, or onnx (after cxrlab export).")] = "torch",
    tta: Annotated[bool, typer.Option(help="Average with the mirrored image.")] = False,
    csv: Annotated[Path | None, typer.Option(help="Write the predictions as CSV.")] = None,
) -> None:
    """Probabilities per label and the predicted labels (at the thresholds chosen on validation)."""
    from cxrlab.runio import atomic_write
    from cxrlab.workflows import predict_images

    table = predict_images(run, images, engine=engine, tta=tta)
    t = Table(title=f"{run} ({engine})")
    t.add_column("image")
    t.add_column("prediction")
    for _, row in table.iterrows():
        t.add_row(Path(row["image"]).name, row["prediction"])
    console.print(t)
    if csv:
        atomic_write(csv, lambda tmp: table.to_csv(tmp, index=False))
        console.print(f"wrote {csv}")


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    out: Annotated[Path | None, typer.Option(help="Output file (default RUN/model.onnx).")] = None,
) -> None:
    """Export the run's best model to ONNX for CPU inference with ONNX Runtime."""
    from cxrlab.workflows import export_onnx

    console.print(f"wrote {export_onnx(run, out)}")


@app.command()
def report(run: Annotated[Path, typer.Argument(help="Run folder.")]) -> None:
    """Re-render RUN/report.html from the run folder (after evaluate, localize, uncertainty, explain)."""
    from cxrlab.report.run_report import render_report
    from cxrlab.run import RunFolder

    console.print(f"wrote {render_report(RunFolder(run))}")


@app.command()
def version() -> None:
    """Print the versions cxrlab runs with."""
    from cxrlab.run import environment

    for k, v in environment().items():
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
