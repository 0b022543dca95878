"""Render a model card (the dict of :func:`cxrlab.workflows.card.card_metadata`) as Markdown."""

from __future__ import annotations

from typing import Any

from cxrlab.evaluate.records import Evaluation
from cxrlab.report import present
from cxrlab.report.setup import preprocessing_steps


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(present.value(c) for c in row) + " |" for row in rows]
    return out


def _metrics(meta: dict[str, Any]) -> list[str]:
    if not meta.get("metrics"):
        return ["Not evaluated yet (run `cxrlab evaluate RUN`)."]
    m = Evaluation.from_dict(meta["metrics"], meta["task"])
    if m.task == "multiclass":
        lines = [f"Test split, n = {present.value(m.n)}: accuracy {present.ci(m.accuracy)} (95% CI), macro F1 "
                 f"{present.value(m.macro_f1)}.", ""]
        rows = [[k, d.precision.value, d.recall.value, d.f1, d.auc.value] for k, d in m.per_class.items()]
        return lines + _table(["class", "precision", "recall", "F1", "AUC"], rows)
    head = (f"Test split, n = {present.value(m.n)}; 95% CIs by bootstrap ({present.value(m.n_boot)} resamples of "
            f"{m.resampling}).")
    one = m.single
    if one is not None:  # one label: macro and micro AUC are its AUC
        lines = [f"{head} {one[0]} AUC {present.ci(one[1].auc)}.", ""]
    else:
        lines = [f"{head} Macro AUC {present.ci(m.macro_auc)}, micro AUC {present.ci(m.micro_auc)}.", ""]
    rows = [[k, present.ci(d.auc), d.threshold, d.sensitivity, d.specificity] for k, d in m.per_label.items()]
    return lines + _table(["label", "AUC (95% CI)", "threshold", "sensitivity", "specificity"], rows)


def _leakage_line(data: dict[str, Any]) -> str:
    """The patients shared between splits, as the run report's leakage box counts them."""
    leak = data.get("leakage")
    if leak is None:
        return "- patients shared between splits: not recorded (a run trained before cxrlab stored them)"
    if not leak["shared"]:
        return "- no patient is in two splits"
    pairs = "; ".join(f"{k.replace('-', ' and ')} share **{v['patients']}** patient(s), e.g. {', '.join(v['examples'])}"
                      for k, v in leak["shared"].items())
    return (f"- **patient leakage**: {pairs}; test metrics are likely optimistic. To remove it: "
            f"{leak['remedy']}.")


def card_markdown(meta: dict[str, Any]) -> str:
    """The model card as a Markdown document."""
    data, split = meta["data"], meta["data"]["split"]
    pre = meta["network_data_format"]["inputs"]["image"]["preprocess"]
    n = split["n_images"]
    lines = [
        f"# Model card: {meta['name']}", "",
        meta["description"], "",
        f"Version {meta['version']}; weights SHA-256 `{meta.get('weights_sha256')}`; created {meta.get('created')}.",
        "", "## Intended use", "", meta["intended_use"], "",
        "## Limitations", "", *[f"- {x}" for x in meta["limitations"]], "",
        "## Training data and split", "",
        f"- source `{data['source']}` at `{data['root']}`; labels: {', '.join(meta['labels'])}",
        f"- uncertain labels: `{data['uncertain']}`; blank: `{data['blank']}`",
        f"- split hash `{split['hash']}`: train {n['train']}, validation {n['val']}, test {n['test']} images",
        f"- split rule: {split['rule']}",
    ]
    lines.append(_leakage_line(data))
    if data.get("test_views"):
        lines.append(f"- views in test: {data['test_views']}")
    lines += ["", "## Metrics", "", *_metrics(meta), ""]
    if meta.get("thresholds"):
        lines += ["## Decision thresholds", "", f"Rule: {meta['threshold_rule']}.", ""]
        lines += _table(["label", "threshold"], [[k, v] for k, v in meta["thresholds"].items()]) + [""]
    lines += ["## Preprocessing", "", "The steps applied, in order: " + " > ".join(preprocessing_steps(pre)) + ".", ""]
    ood = meta.get("ood")
    lines += ["## Out-of-distribution warning", ""]
    if ood:
        lines.append(f"Mahalanobis distance of the penultimate features to a Gaussian of {ood['n_train']} training "
                     f"images ({ood['covariance']} covariance, {ood['dim']} features); images beyond the "
                     f"{present.value(ood['percentile'], 0)}th percentile of {ood['n_val']} validation images "
                     f"(threshold {present.value(ood['threshold'])}) are flagged."
                     + (f" Threshold rule: {ood['threshold_rule']}." if ood.get("threshold_rule") else ""))
        for w in ood.get("warnings") or []:
            lines.append(f"\n**Warning:** {w}.")
        if ood.get("self_test"):
            probes = ", ".join(f"{k} {present.value(p['score'])} ({'flagged' if p['flagged'] else 'NOT flagged'})"
                               for k, p in ood["self_test"]["probes"].items())
            lines.append(f"\nSelf-test at fit time: {probes}: "
                         + ("passed." if ood.get("reliable") else "**the OOD check is unreliable for this run**."))
        elif "reliable" not in ood:
            lines.append("\nNo self-test recorded (fitted by an older cxrlab; `rm RUN/ood.json && cxrlab card RUN` "
                         "refits it).")
    else:
        lines.append("None stored for this run.")
    arch, tr = meta["architecture"], meta["training"]
    loaded = f" ({tr['pretrained_loaded']})" if tr.get("pretrained_loaded") else ""
    lines += ["", "## Model and training", "",
              f"- architecture `{arch['name']}`, options {arch['options']}, dropout {arch['dropout']}, "
              f"{arch['in_chans']} input channel(s)",
              f"- seed {tr['seed']}, loss `{tr['loss']}`, optimiser `{tr['optimizer']}` (lr {tr['lr']}), "
              f"pretrained `{tr['pretrained']}`{loaded}, {tr['epochs_run']} epochs (best {tr['best_epoch']})", "",
              "## Library versions", "",
              ", ".join(f"{k} {v}" for k, v in meta.get("library_versions", {}).items()) or "not recorded", ""]
    return "\n".join(lines)
