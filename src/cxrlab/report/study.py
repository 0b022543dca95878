"""The study report: a paper-shaped table, tests against the baseline, plots, published vs ours.

Draws and writes only; every number comes in the ``data`` dict built by
:func:`cxrlab.workflows.study_report.study_report`.  ``report.html`` embeds its
figures (one file to send); ``report.md`` holds the same tables and links the
same figures, written to ``figures/`` beside it.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cxrlab.runio import atomic_write, atomic_write_text  # noqa: E402


def _f(v: Any, d: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{d}f}"


def _ci(d: dict[str, Any] | None, key: str = "auc") -> str:
    if not d:
        return "n/a"
    v = d.get(key, d.get("value"))
    lo, hi = d.get("ci_low"), d.get("ci_high")
    return f"{_f(v)} [{_f(lo)}, {_f(hi)}]" if lo is not None else _f(v)


def _p(p: Any, n_boot: int | None = None) -> str:
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return "n/a"
    if n_boot and p < 1 / n_boot:
        return f"< {1 / n_boot:.0e}"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _headline(row: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    if row["task"] == "multiclass" and row.get("accuracy"):
        return "accuracy", row["accuracy"]
    return "macro AUC", row.get("macro_auc")


def results_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    cells = data["cells"]
    labels = next(iter(cells.values()))["labels"]
    head = ["cell", "epochs (best)", "headline [95% CI]", *labels]
    rows = []
    for name, r in cells.items():
        metric, d = _headline(r)
        rows.append([name + (" (baseline)" if name == data["baseline"] else ""),
                     f"{r.get('epochs_run')} ({r.get('best_epoch')})", f"{metric} {_ci(d, 'auc' if 'auc' in (d or {}) else 'value')}",
                     *[_ci(r["per_label"].get(lab)) for lab in labels]])
    return head, rows


def tests_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["cell A", "cell B", "macro AUC diff A-B [95% CI]", "paired bootstrap p", "labels p<0.05 (Holm)",
            "DeLong per label (Holm p)"]
    accuracy = any(c.get("accuracy") for c in data["comparisons"])
    if accuracy:
        head.insert(2, "accuracy diff A-B (McNemar p)")
    rows = []
    for c in data["comparisons"]:
        m = c["macro_auc_difference"]
        sig = [lab for lab, d in c["per_label"].items() if d.get("p_holm") is not None and d["p_holm"] < 0.05]
        per = "; ".join(f"{lab} {d.get('diff', float('nan')):+.3f} ({_p(d.get('p_holm'))})"
                        for lab, d in c["per_label"].items())
        row = [c["a"], c["b"], f"{m['diff_mean']:+.4f} [{m['ci_low']:+.4f}, {m['ci_high']:+.4f}]",
               _p(m.get("p"), c.get("n_boot")), str(len(sig)), per]
        if accuracy:
            acc = c.get("accuracy")
            row.insert(2, f"{acc['diff']:+.3f} ({_p(acc['p'])}; {acc['a_only']} vs {acc['b_only']} discordant)"
                       if acc else "n/a")
        rows.append(row)
    return head, rows


def operating_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """Binary cells at their validation-chosen threshold: accuracy, sensitivity, specificity, confusion."""
    ops = {n: r["operating_point"] for n, r in data["cells"].items() if r.get("operating_point")}
    if not ops:
        return None
    head = ["cell", "threshold (val)", "accuracy [95% CI]", "sensitivity [95% CI]", "specificity [95% CI]",
            "TN / FP / FN / TP"]
    rows = [[n, _f(op["threshold"]), _ci(op["accuracy"], "value"), _ci(op["sensitivity"], "value"),
             _ci(op["specificity"], "value"),
             " / ".join(str(op["confusion"][k]) for k in ("tn", "fp", "fn", "tp"))] for n, op in ops.items()]
    return head, rows


def confusion_plot(data: dict[str, Any]) -> str | None:
    """One row-normalised confusion matrix per binary or multi-class cell (counts in the squares)."""
    cells = {n: r for n, r in data["cells"].items() if r.get("confusion_matrix")}
    if not cells:
        return None
    k = len(cells)
    fig, axes = plt.subplots(1, k, figsize=(3.4 * k, 3.3), squeeze=False)
    for ax, (name, r) in zip(axes[0], cells.items(), strict=True):
        m = [[float(v) for v in row] for row in r["confusion_matrix"]]
        names = r["labels"] if r["task"] == "multiclass" else [f"no {r['labels'][0]}", r["labels"][0]]
        share = [[v / (sum(row) or 1) for v in row] for row in m]
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i, row in enumerate(m):
            for j, v in enumerate(row):
                ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=8,
                        color="white" if share[i][j] > 0.5 else "black")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names if ax is axes[0][0] else [], fontsize=7)  # same classes
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
    axes[0][0].set_ylabel("true", fontsize=7)
    fig.suptitle("confusion matrices (test split; binary cells at the validation-chosen threshold)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def published_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["cell", "metric", "published", "ours [95% CI]", "ours - published"]
    rows = []
    for cell, pub in data["published"].items():
        r = data["cells"].get(cell)
        if r is None:
            continue
        # published ``macro`` is the macro AUC, ``accuracy`` the accuracy (multi-class / binary cells)
        for what, value, ours, key in ([("macro", pub.get("macro"), r.get("macro_auc"), "auc"),
                                        ("accuracy", pub.get("accuracy"), r.get("accuracy"), "value")]
                                       + [(lab, v, r["per_label"].get(lab), "auc")
                                          for lab, v in pub.get("labels", {}).items()]):
            if value is None or (what not in ("macro", "accuracy") and what not in r["per_label"]):
                continue
            mine = (ours or {}).get(key)
            rows.append([cell, what, f"{value:.4f}".rstrip("0").rstrip("."), _ci(ours, key),  # as published
                         f"{mine - value:+.3f}" if isinstance(mine, float) else "n/a"])
    return head, rows


def localization_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    locs = {n: r["localization"] for n, r in data["cells"].items() if r.get("localization")}
    if not locs:
        return None
    first = next(iter(locs.values()))["per_class"]
    order = sorted(first, key=lambda k: first[k].get("mean_box_area", 0.0))
    head = ["class (by mean box area)", "mean box area (px)"] + [f"{n} acc / prec" for n in locs]
    rows = [[lab, _f(first[lab].get("mean_box_area"), 0)]
            + [f"{_f(loc['per_class'].get(lab, {}).get('accuracy'), 2)} / "
               f"{_f(loc['per_class'].get(lab, {}).get('precision'), 2)}" for loc in locs.values()]
            for lab in order]
    return head, rows


def axis_plot(data: dict[str, Any]) -> str | None:
    """Headline metric vs the first axis, with 95% CI bars (one line per value of a second axis)."""
    if not data["axes"]:
        return None
    keys = list(data["axes"])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    groups: dict[str, list[tuple[int, float, float, float]]] = {}
    for name, ov in data["overrides"].items():
        r = data["cells"][name]
        metric, d = _headline(r)
        if not d:
            continue
        key = "auc" if "auc" in d else "value"
        x = data["axes"][keys[0]].index(ov[keys[0]])
        g = ", ".join(f"{k.split('.')[-1]}={ov[k]}" for k in keys[1:]) or metric
        groups.setdefault(g, []).append((x, d[key], d.get("ci_low") or d[key], d.get("ci_high") or d[key]))
    for g, pts in groups.items():
        pts.sort()
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, label=g)
    ax.set_xticks(range(len(data["axes"][keys[0]])), [str(v) for v in data["axes"][keys[0]]])
    ax.set_xlabel(keys[0])
    ax.set_ylabel(f"{_headline(next(iter(data['cells'].values())))[0]} (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def curves_plot(data: dict[str, Any]) -> str | None:
    cells = {n: r for n, r in data["cells"].items() if r.get("history")}
    if not cells:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, r in cells.items():
        h = r["history"]
        ep = [x["epoch"] for x in h]
        sel = h[-1].get("selection", "val_macro_auc")
        axes[0].plot(ep, [x["val_loss"] for x in h], label=name)
        axes[1].plot(ep, [x.get(sel) for x in h], label=name)
        axes[1].set_ylabel(f"validation {sel.removeprefix('val_').replace('_', ' ')}")
    axes[0].set_ylabel("validation loss")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle("training curves per cell (same axes)")
    return _png(fig)


def _write_png(path: Path, b64: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(base64.b64decode(b64)))


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows])


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .6em}"
        "th{background:#f3f3f3}img{max-width:100%}.note{color:#555}")


def render_study(folder: Path, data: dict[str, Any]) -> Path:
    """Write ``report.html`` (self-contained) and ``report.md``; return the HTML path."""
    sections: list[tuple[str, tuple[list[str], list[list[str]]] | None, str | None, str]] = [
        ("Results per cell", results_table(data), None,
         "AUC with 95% bootstrap CIs (patients resampled where known); epochs run and the best epoch show each "
         "cell's budget (training stops when validation stops improving, within the recipe's cap)."),
        (f"Tests against the baseline ({data['baseline']}) and requested pairs", tests_table(data), None,
         "DeLong test per label, Holm-adjusted over labels; paired bootstrap of the macro-AUC difference; "
         "McNemar's exact test of accuracy for binary and multi-class cells. "
         "A resampling p-value with no crossing is reported as p < 1/B."),
        ("Published vs ours", published_table(data) if data["published"] else None, None,
         f"Published numbers: {data['published_source'] or 'the paper'}."
         + (" These cells ran on the synthetic phantom: the comparison shows the table's shape, not a "
            "reproduction." if data["phantom"] else "")),
        ("Operating point (binary cells)", operating_table(data), None,
         "Each cell's threshold is chosen on its validation split (Youden), never on test; 95% bootstrap CIs."),
        ("Confusion matrices", None, confusion_plot(data), ""),
        ("Localisation by box size (CAM boxes, IoU >= 0.1)", localization_table(data), None,
         "Accuracy = share of images where a CAM box hits a true box; precision = hits / boxes; classes "
         "ordered by mean true-box area."),
        ("Metric vs axis", None, axis_plot(data), ""),
        ("Training curves", None, curves_plot(data), ""),
    ]
    title = data["title"] or data["name"]
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='note'>{html.escape(data['description'])}</p>"]
    md = [f"# {title}", "", data["description"], ""]
    if data["missing"]:
        parts.append(f"<p><b>Cells not finished:</b> {html.escape(', '.join(data['missing']))}</p>")
        md += [f"**Cells not finished:** {', '.join(data['missing'])}", ""]
    for head, table, img, note in sections:
        if table is None and img is None:
            continue
        parts.append(f"<h2>{html.escape(head)}</h2><p class='note'>{html.escape(note)}</p>")
        md += [f"## {head}", "", note, ""]
        if table is not None:
            parts.append(_html_table(*table))
            md += [_md_table(*table), ""]
        if img is not None:
            parts.append(f"<p><img alt='{html.escape(head)}' src='data:image/png;base64,{img}'></p>")
            name = f"figures/{head.lower().replace(' ', '_')}.png"
            _write_png(folder / name, img)
            md += [f"![{head}]({name})", ""]
    parts.append("</body></html>")
    atomic_write_text(folder / "report.md", "\n".join(md) + "\n")
    return atomic_write_text(folder / "report.html", "\n".join(parts))
