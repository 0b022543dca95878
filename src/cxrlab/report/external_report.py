"""The page of an external evaluation (``RUN/external/<name>/report.html``), drawn from its record alone.

Sections in the order a reviewer asks: which labels could be compared and how they were matched,
which images were scored (and which of them copy training images), how prevalence and composition differ from the run's own test split,
the transported results (the run's thresholds as they are), the recalibrated ones beside
them on the held-out part of the target, and the subgroups at the run's thresholds (the run report's
section, :mod:`cxrlab.report.subgroups_report`, over the target's scored images).  Every number goes
through :mod:`cxrlab.report.present`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrlab.evaluate.records import (
    RATES,
    Decisions,
    Estimate,
    ExternalLabel,
    ExternalResult,
    SubgroupResult,
)
from cxrlab.report import present
from cxrlab.report.html import box, esc, table, write_report
from cxrlab.report.subgroups_report import subgroups_section

NOT_EVALUABLE = "not evaluable (the target lacks it)"
#: A scored test split under this many images is small (wide CIs, labels without positives): the page and
#: the CLI hint ``--all-images``.
SMALL_SCORED = 200
#: Source options that keep one kind of view, named when the target has views the run's test split lacks.
VIEW_OPTIONS = "-o views=frontal for chexpert and mimic"


def _among(n: int, n_images: int, where: str = "scored") -> str:
    return f"{n} {where} images" if n == n_images else f"{n} labelled of the {n_images} {where} images"


def auc_reason(lab: ExternalLabel, n_images: int) -> str:
    """Why the label's AUC on the target is n/a ("" when it is defined): the target lacks it, or the
    scored images hold one class only (an AUC needs a positive and a negative)."""
    if lab.auc.defined:
        return ""
    if not lab.evaluable:
        return "the target lacks it"
    return one_class_reason(lab.n, lab.positives, n_images)


def one_class_reason(n: int, positives: int, n_images: int, where: str = "scored") -> str:
    """``"no positives among the 61 scored images"`` (or no negatives, or no labelled image)."""
    if n == 0:
        return f"no labelled image among the {n_images} {where} (uncertain ones are left out)"
    if positives == 0:
        return f"no positives among the {_among(n, n_images, where)}"
    if positives >= n:
        return f"no negatives among the {_among(n, n_images, where)}"
    return "not defined"


def auc_text(lab: ExternalLabel, n_images: int) -> str:
    """The target AUC with its CI, or ``n/a (why)``."""
    return present.ci(lab.auc) if lab.auc.defined else f"{present.NA} ({auc_reason(lab, n_images)})"


def run_auc_text(lab: ExternalLabel) -> str:
    """The label's AUC on the run's own test split (known for every label the run has), or ``n/a (why)``."""
    if lab.run_auc.defined:
        return present.ci(lab.run_auc)
    p = lab.run_prevalence
    why = ("no positives in the run's test split" if p == 0 else "no negatives in the run's test split" if p == 1
           else "not labelled in the run's test split" if p != p else "not recorded")
    return f"{present.NA} ({why})"


def label_line(lab: ExternalLabel, n_images: int) -> str:
    """One label in one line of plain text (what ``cxrlab evaluate --on`` prints)."""
    if not lab.evaluable:
        return f"{lab.model_label} -> {NOT_EVALUABLE}: run test {run_auc_text(lab)}"
    auc = present.ci(lab.auc) if lab.auc.defined else f"{present.NA}, {auc_reason(lab, n_images)}"
    return f"{lab.model_label} -> {lab.target_column} ({lab.kind}): AUC {auc} (run test {run_auc_text(lab)})"


def scored_hint(result: ExternalResult) -> str:
    """The hint for a small scored test split ("" otherwise): how many images, and ``--all-images``."""
    if result.scored != "test split" or result.n_images >= SMALL_SCORED:
        return ""
    return (f"only {result.n_images} images of {result.n_patients} patients scored (the target's test split): CIs "
            "are wide and a label may have no positives; --all-images scores every image of the target (none "
            "trained the run; the duplicate check looks for copies)")


def view_warning(result: ExternalResult) -> str:
    """One line when the target has views the run's test split lacks ("" otherwise): their shares and the
    source option that keeps one kind of view."""
    views = result.composition.get("view") or {}
    run_known = {c for c, (a, _) in views.items() if a > 0 and c != "unknown"}
    new = {c: b for c, (a, b) in views.items() if a == 0 and b > 0 and c != "unknown"}
    if not run_known or not new:
        return ""
    shares = ", ".join(f"{c} {present.percent(b)}" for c, b in new.items())
    return (f"the target has views the run's test split lacks: {shares} of the scored images (the run's: "
            f"{', '.join(sorted(run_known))}); the model was likely never trained on them. A source option keeps "
            f"one kind of view where the source has it (e.g. {VIEW_OPTIONS})")


def _rate(d: Decisions | None, key: str) -> str:
    if d is None or d.operating_point is None or key not in d.operating_point.rates:
        return present.NA
    return present.ci(d.operating_point.rates[key])


def label_map(result: ExternalResult) -> str:
    rows = [[lab.model_label, lab.target_column or NOT_EVALUABLE, lab.canonical or present.NA, lab.kind]
            for lab in result.labels.values()]
    only = ", ".join(result.target_only) or "none"
    return (table(["model label", "target column", "canonical name", "match"], rows, "text")
            + f"<p>Target labels the model lacks (not scored): {esc(only)}.</p>"
            + f"<p class='muted'>Matched by name through the label vocabulary {esc(result.vocabulary)}, never by "
              "column position. A label the target lacks is not evaluable: it is never scored as negative.</p>")


def scored(result: ExternalResult) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in result.options.items()) or "none"
    hint, views = scored_hint(result), view_warning(result)
    return (f"<p>{esc(result.n_images)} images of {esc(result.n_patients)} patients: the target's "
            f"{esc(result.scored)} (source <code>{esc(result.source)}</code> at <code>{esc(result.root)}</code>, "
            f"options {esc(opts)}). Targets: uncertain (-1) left out, blank (not mentioned) negative.</p>"
            + (box("bad", "A small scored set", f"<p>{esc(hint[0].upper() + hint[1:])}.</p>") if hint else "")
            + (box("bad", "Views the run was not tested on", f"<p>{esc(views[0].upper() + views[1:])}.</p>")
               if views else ""))


def prevalence(result: ExternalResult) -> str:
    rows = []
    for lab in result.labels.values():
        if not lab.evaluable:
            rows.append([lab.model_label, present.percent(lab.run_prevalence), NOT_EVALUABLE, "", ""])
            continue
        t = lab.transported
        rows.append([lab.model_label, present.percent(lab.run_prevalence), present.percent(lab.prevalence),
                     present.value(t.threshold) if t else present.NA,
                     present.percent(t.predicted_positive) if t else present.NA])
    return (table(["label", "prevalence, run test split", "prevalence, target", "run threshold",
                   "predicted positive at it, target"], rows)
            + "<p class='muted'>A threshold chosen on the run's validation split gives its own share of positives "
              "elsewhere; PPV and NPV follow the target's prevalence.</p>")


def composition(result: ExternalResult) -> str:
    rows: list[list[Any]] = []
    for factor, cats in result.composition.items():
        for cat, (a, b) in cats.items():
            rows.append([factor, cat, present.percent(a), present.percent(b)])
    ood = result.ood
    if ood is not None:
        rows.append(["OOD flagged", f"OOD score > {present.value(ood.get('threshold'))}",
                     present.percent(ood.get("run_share")), present.percent(ood.get("target_share"))])
    out = table(["factor", "category", "run test split", "target"], rows, "text") if rows else \
        "<p>No view, sex or age recorded on either side.</p>"
    if ood is None:
        out += "<p class='muted'>No OOD share: the run has no <code>ood.json</code> (<code>cxrlab card RUN</code> fits it).</p>"
    else:
        out += ("<p class='muted'>OOD score: the Mahalanobis distance of an image's penultimate-layer features "
                "from those of the run's training images (a Gaussian fitted at the end of training, "
                "<code>RUN/ood.json</code>). An image is flagged when its score is above the threshold, which is set "
                "on the run's validation images so that about 1% of images like them are flagged (docs/serve.md, "
                "\"Out-of-distribution warning\").</p>")
        for note in (ood.get("note"), ood.get("run_note")):
            if note:  # a sentence of its own on the page (the note is written to follow other words)
                out += f"<p class='muted'>{esc(note[:1].upper() + note[1:])}</p>"
    return out


def transported(result: ExternalResult) -> str:
    rows = []
    for lab in result.labels.values():
        if not lab.evaluable:
            rows.append([lab.model_label, run_auc_text(lab), NOT_EVALUABLE, "", "", "", "", ""])
            continue
        rows.append([lab.model_label, run_auc_text(lab), auc_text(lab, result.n_images),
                     f"{lab.positives}/{lab.n}",
                     *(_rate(lab.transported, k) for k in RATES if k != "accuracy")])
    over = ", ".join(result.macro_labels) if result.macro_labels else "evaluable labels"
    rows.append([f"macro ({over})", present.ci(result.run_macro_auc), present.ci(result.macro_auc), "", "",
                 "", "", ""])
    return (table(["label", "AUC, run test split", "AUC, target", "positives/n", "sensitivity", "specificity",
                   "PPV", "NPV"], rows)
            + f"<p class='muted'>95% CIs from {esc(result.n_boot)} bootstrap resamples of patients; rates at the "
              "run's own validation-chosen thresholds.</p>")


def kept_reason(lab: ExternalLabel) -> str:
    """Why recalibration kept the run's threshold for the label ("" when it refitted one)."""
    h = lab.held_out or {}
    if not h.get("kept_run_threshold"):
        return ""
    pos, n = int(h.get("fit_positives") or 0), int(h.get("fit_images") or 0)
    had = "0 positives" if pos == 0 else f"no negatives, {pos} positives"
    return f"kept the run's threshold: the fit slice of {n} images had {had}"


def _held_row(lab: ExternalLabel) -> list[list[Any]]:
    h = lab.held_out or {}
    rows = []
    kept = kept_reason(lab)
    for which in ("transported", "recalibrated"):
        d = lab.decisions(which)
        name = "recalibrated (the run's kept: see below)" if which == "recalibrated" and kept else which
        rows.append([lab.model_label, name, present.value(d.threshold) if d else present.NA,
                     present.percent(h.get("prevalence")), present.percent(d.predicted_positive) if d else present.NA,
                     *(_rate(d, k) for k in ("sensitivity", "specificity", "ppv", "npv"))])
    return rows


def _held_auc(lab: ExternalLabel) -> str:
    h = lab.held_out or {}
    auc = Estimate.from_dict(h.get("auc"))
    if auc.defined:
        return present.ci(auc)
    n, prev = int(h.get("n") or 0), h.get("prevalence")
    positives = round(prev * n) if prev is not None and prev == prev else 0
    return f"{present.NA} ({one_class_reason(n, positives, n, 'held-out')})"


def recalibrated(result: ExternalResult) -> str:
    rc = result.recalibration
    if "fit_images" not in rc:
        return "<p>Recalibration off (<code>--recalibrate-fraction 0</code>).</p>"
    rows: list[list[Any]] = []
    cal: list[list[Any]] = []
    for lab in result.labels.values():
        if lab.evaluable and lab.held_out:
            rows += _held_row(lab)
            p = lab.held_out.get("platt") or {}
            cal.append([lab.model_label, _held_auc(lab),
                        present.value(p.get("ece_transported")), present.value(p.get("ece_recalibrated")),
                        present.value(p.get("mean_probability_transported")),
                        present.value(p.get("mean_probability_recalibrated")), present.percent(lab.held_out.get("prevalence"))])
    kept: dict[str, list[str]] = {}
    for lab in result.labels.values():
        if kept_reason(lab):
            kept.setdefault(kept_reason(lab), []).append(lab.model_label)
    kept_note = "".join(f"<p>{esc(why[0].upper() + why[1:])} for {esc(', '.join(labs))}; their recalibrated rows "
                        "repeat the transported ones (Youden's J needs both classes).</p>" for why, labs in kept.items())
    intro = (f"<p>Fitted on {esc(rc['fit_images'])} images of {esc(rc['fit_patients'])} patients "
             f"({present.percent(rc['fraction'], 0)} of the patients, drawn with seed {esc(rc.get('seed'))}), "
             f"scored on the other {esc(rc['scored_images'])} images: thresholds by Youden's J (the run's rule), "
             "probabilities by Platt scaling. Both rows are on the same held-out images.</p>")
    return (intro + table(["label", "thresholds", "threshold", "prevalence", "predicted positive", "sensitivity",
                           "specificity", "PPV", "NPV"], rows) + kept_note
            + "<h3>Probabilities</h3>"
            + table(["label", "AUC (held out; unchanged by recalibration)", "ECE transported", "ECE recalibrated",
                     "mean probability transported", "mean probability recalibrated", "prevalence"], cal)
            + box("unknown", "When recalibration is honest",
                  "<p>Only on a slice never scored: the fit slice is patient-disjoint from the images scored here. "
                  "A threshold fitted and scored on the same images would flatter it.</p>"))


def duplicates(result: ExternalResult) -> str:
    """Each scored image that copies a training image, named with its twin, and the check's threshold."""
    d = result.duplicates
    if d is None:
        return f"<p>Duplicate check {esc(result.duplicate_note or 'not run')}.</p>"
    m = d.method
    head = (f"<p>{esc(d.n_query)} target images checked against the {esc(d.n_reference)} images the run trained "
            f"on: {esc(len(d.exact))} exact and {esc(len(d.near))} near copies.")
    if result.duplicates_excluded:
        head += f" {esc(result.duplicates_excluded)} dropped from scoring (<code>--exclude-duplicates</code>)."
    elif d.matches:
        head += " They are scored with the rest (<code>--exclude-duplicates</code> drops them)."
    head += "</p>"
    rows = [[x.query, x.reference, x.kind, present.value(x.distance), x.crop] for x in d.matches]
    out = head + (table(["target image", "training image", "kind", "distance", "crop undone"], rows, "text")
                  if rows else "")
    return out + (
        f"<p class='muted'>Exact: the same pixels at the run's {esc(m.get('image_size'))} px input. Near: the same "
        "radiograph resized, re-encoded or cropped at one edge (up to "
        f"{present.percent(m.get('max_crop'))}); distance = 1 - correlation of the high-passed images after undoing "
        f"the crop, a near copy at distance &le; {present.value(m.get('max_distance'))}. Measured on the phantom "
        "(<code>benchmarks/duplicates.py</code>, 64 px): 0 false matches among 2,000 x 2,000 distinct images "
        "(nearest 0.056; same-patient follow-ups 0.037), near copies at &le; 0.021. Not found: flips, rotations, "
        "crops at two edges.</p>")


def duplicate_line(result: ExternalResult) -> str:
    """The duplicate check in one line of plain text (what ``cxrlab evaluate --on`` prints)."""
    d = result.duplicates
    if d is None:
        return f"duplicates of training images: {result.duplicate_note or 'not checked'}"
    named = ", ".join(f"{m.query} = {m.reference}" for m in d.matches[:3]) + (", ..." if len(d.matches) > 3 else "")
    what = f" ({named})" if named else ""
    if result.duplicates_excluded:
        tail = f"; {result.duplicates_excluded} dropped from scoring"
    elif d.matches:
        tail = "; scored (--exclude-duplicates drops them)"
    else:
        tail = ""
    return (f"duplicates of training images: {len(d.exact)} exact, {len(d.near)} near of {d.n_query} checked "
            f"against {d.n_reference}{what}{tail}")


def subgroups_skipped(result: ExternalResult, labels: list[str], every: bool = False) -> str:
    """The one line naming the labels left out of the subgroups (one class among the scored images: no
    group has an AUC or a rate to compare), grouped by reason; "" when none is.  ``every``: all labels were,
    so the analysis is skipped."""
    if not labels:
        return ""
    by_reason: dict[str, list[str]] = {}
    for lab in labels:
        by_reason.setdefault(auc_reason(result.labels[lab], result.n_images), []).append(lab)
    why = "; ".join(f"{', '.join(labs)} ({reason})" for reason, labs in by_reason.items())
    if every:
        return f"subgroups: skipped, every label has one class only among the scored images: {why}"
    return f"subgroups: left out {why}: one class only, no AUC or rate in any group"


def subgroups(result: ExternalResult, sub: SubgroupResult | None, note: str, figures: dict[str, Path],
              skipped: str = "") -> str:
    """The subgroup section over the target's scored images, or the one line that says why there is none."""
    if sub is None:
        return f"<p>{esc(note or 'Subgroups not analysed.')}</p>"
    return (f"<p>The {esc(result.source)} target's scored images, grouped by {esc(', '.join(g.name for g in sub.groupings.values() if len(g.attributes) == 1))} "
            "as the target records them, at the run's thresholds as they are (transported, not the recalibrated "
            "ones).</p>" + (f"<p>{esc(skipped[0].upper() + skipped[1:])}.</p>" if skipped else "")
            + subgroups_section(sub, figures))


def render_external(result: ExternalResult, path: Path, sub: SubgroupResult | None = None, sub_note: str = "",
                    figures: dict[str, Path] | None = None, sub_skipped: str = "") -> Path:
    """Write the page of ``result`` to ``path`` (``RUN/external/<name>/report.html``).

    Args:
        sub, sub_note: the subgroup analysis of the scored images (``subgroups.json``), or None and why not.
        figures: label -> its forest plot (``external/<name>/figures/subgroups_<label>.png``).
        sub_skipped: the line naming the labels left out of the subgroups (one class among the scored images).
    """
    drop = result.macro_auc.value - result.run_macro_auc.value
    over = f" over {len(result.macro_labels)} labels both sides can score" if result.macro_labels else ""
    subtitle = (f"run {result.run} on {result.source} ({result.n_images} images): macro AUC{over} "
                f"{present.ci(result.macro_auc)} vs {present.ci(result.run_macro_auc)} on its own test split "
                f"({present.diff(drop)})")
    sections = [("Label map", label_map(result)), ("Images scored", scored(result)),
                ("Prevalence and positive rate", prevalence(result)), ("Composition shift", composition(result)),
                ("Duplicates of training images", duplicates(result)),
                ("Transported results", transported(result)), ("Recalibrated results", recalibrated(result)),
                ("Subgroups", subgroups(result, sub, sub_note, figures or {}, sub_skipped))]
    return write_report(Path(path), f"cxrlab external evaluation: {result.name}", sections, subtitle)
