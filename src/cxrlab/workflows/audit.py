"""``cxrlab audit RUN [--masks SPEC]``: where the model looks, measured on its own test split.

Composes the leaves: masks (:mod:`cxrlab.data.masks`) through the image's own geometry into model
pixels, CAMs and their per-image values (:mod:`cxrlab.explain.audit`), patient-bootstrap CIs
(:mod:`cxrlab.evaluate.audit`) into an :class:`~cxrlab.evaluate.records.AuditResult`, written as
``audit_<method>.json`` with a per-image table ``audit_<method>.csv`` (for paired comparisons between
runs, :func:`audit_difference`), the shortcut-suspects figure and the report section.

Which images: per label, the test images positive for it that have a lung mask (images without one are
left out and counted).  The IoU level is chosen on the *validation* split's boxes, never on the test's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.audit import difference_ci, mean_ci
from cxrlab.evaluate.records import AuditLabel, AuditResult, AuditTarget, Estimate
from cxrlab.explain import audit as ex
from cxrlab.explain.cams import METHODS
from cxrlab.models import cam_layer
from cxrlab.report.audit_report import suspects_figure
from cxrlab.report.run_report import render_report
from cxrlab.run import RunFolder
from cxrlab.runio import atomic_write
from cxrlab.workflows.common import (
    build_manifest,
    geometries,
    load_run_images,
    open_model,
    run_folder,
    run_split,
    targets,
)

log = logging.getLogger(__name__)

LEVEL_RULES = ("otsu", "best")


def default_masks(root: str | Path) -> Path | None:
    """The masks a phantom written with ``--masks`` keeps beside its images (``ROOT/masks``), if any."""
    p = Path(root) / "masks"
    return p if p.is_dir() else None


def phantom_masks_command(root: str | Path) -> tuple[str, Path] | None:
    """The ``cxrlab phantom ... --masks`` command that writes the phantom at ``root`` again with its masks,
    and the ``--masks`` folder it writes.

    A phantom is a function of its ``phantom.json`` (kind, n, size, seed and the planted options), and its
    masks do not change its images, so this command writes the same images beside matching masks (into
    ``ROOT-masks``, leaving the run's data as it is).  None when ``root`` is no phantom, or one whose kind
    writes no masks or whose options the command line cannot repeat.
    """
    import json

    root = Path(root)
    meta_path = next((p for p in (root / "phantom.json", root.parent / "phantom.json") if p.is_file()), None)
    if meta_path is None:
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("generator") != "cxrlab.phantom":
        return None
    kind = {None: "nih14", "kermany": "kermany", "cxr5-npz": "cxr5"}.get(meta.get("layout"), "")
    if not kind or not all(isinstance(meta.get(k), int) for k in ("n", "size", "seed")):
        return None
    folder = meta_path.parent
    args = [f"--out {str(folder).rstrip('/')}-masks"] + ([f"--kind {kind}"] if kind != "nih14" else [])
    args += [f"--n {meta['n']}", f"--size {meta['size']}", f"--seed {meta['seed']}"]
    if meta.get("subtle"):
        args.append("--subtle")
    site, cut, gap = meta.get("site"), meta.get("shortcut"), meta.get("subgroup_gap")
    try:
        if site:
            args.append(f"--site {site['name']}")
        if cut:
            args.append(f"--shortcut {cut['label']}:{cut['positive_rate']}:{cut['negative_rate']}")
        if gap:
            args.append(f"--subgroup-gap {gap['attribute']}={gap['value']}:{gap['factor']}")
    except (KeyError, TypeError):
        return None
    return "cxrlab phantom " + " ".join([*args, "--masks"]), Path(f"{str(folder).rstrip('/')}-masks") / "masks"


def _lungs(masks: Any, tid: str, geom: Any) -> np.ndarray | None:
    """The lung mask of a test image in model pixels (``lungs``, or the union of both lungs)."""
    return masks.in_model(tid, "lungs", geom)


def audit_run(run_dir: str | Path, masks: str | Path | None = None, method: str = "gradcam",
              level: str = "otsu", n_boot: int = 1000, sanity: int = 64, suspects: int = 8,
              max_val: int = 200, batch_size: int = 32) -> AuditResult:
    """Audit a run's CAMs on its test split; write ``audit_<method>.json``/``.csv``, the suspects figure, the report.

    Args:
        masks: a mask folder or file (:func:`cxrlab.data.masks.read_masks`); default ``DATA_ROOT/masks``
            when the run's data is a phantom written with masks.
        method: one of :data:`cxrlab.explain.cams.METHODS`.
        level: how the IoU threshold is chosen on the validation split: ``otsu`` or ``best`` (mean IoU).
        sanity: images for the randomisation and deletion checks (0: skip them).
        suspects: images in the figure of the most energy outside the lungs.
        max_val: validation cases at most for choosing the level.
    """
    from cxrlab.data.masks import read_masks

    if method not in METHODS:
        raise CxrlabError(f"--method: unknown explanation method {method!r}; known: {', '.join(METHODS)}")
    if level not in LEVEL_RULES:
        raise CxrlabError(f"--level must be one of {', '.join(LEVEL_RULES)}, got {level!r}")
    t0 = time.perf_counter()
    run = run_folder(run_dir)
    cfg = run.read_config()
    opened = open_model(run)
    rec, predictor = opened.record, opened.predictor
    layer = cam_layer(opened.model)
    manifest = build_manifest(cfg)
    test = run_split(run, cfg, manifest, "test")
    spec = masks if masks is not None else default_masks(cfg.data.root)
    if spec is None:
        write = phantom_masks_command(cfg.data.root)
        raise CxrlabError(f"{cfg.data.root}: no masks given and the dataset has no masks/ folder; pass --masks "
                          "SPEC (a folder of PNG masks, a CheXmask CSV or a COCO RLE JSON)"
                          + (f"; for this phantom, `{write[0]}` writes the same images with matching masks, "
                             f"then pass --masks {write[1]}" if write else ""))
    spec = str(spec)
    test_ids = test["image"].tolist()
    # masks of other images: left out and counted (one line)
    maskset = read_masks(spec, test_ids, scored="the test split")
    of_test = {tid: tid for tid in maskset.ids()}
    geometry = geometries(manifest.root, list(of_test), rec.preprocess)
    lung_model: dict[str, np.ndarray] = {}
    heart_model: dict[str, np.ndarray] = {}
    for tid in of_test:
        lm = _lungs(maskset, tid, geometry[tid])
        if lm is not None:
            lung_model[tid] = lm
        hm = maskset.in_model(tid, "heart", geometry[tid])
        if hm is not None:
            heart_model[tid] = hm
    others = int(maskset.left_out.get("not an image of the set", 0))
    counts = {"test_images": len(test_ids), "with_masks": len(lung_model),
              "without_masks": len(test_ids) - len(lung_model), "masks_not_in_test": others,
              "empty_masks": int(maskset.left_out.get("empty", 0))}
    if not lung_model:
        raise CxrlabError(f"{spec}: no lung mask (lungs, or left_lung and right_lung) for any test image")
    if counts["without_masks"]:
        log.warning("%s: %d of %d test images have no lung mask and are left out", spec, counts["without_masks"],
                    len(test_ids))

    y = targets(manifest, test, rec.labels, cfg)
    probs = _test_probabilities(run, test_ids, rec.labels)
    thr = np.array([rec.thresholds.get(lab, 0.5) for lab in rec.labels])
    predicted = (probs.argmax(1)[:, None] == np.arange(len(rec.labels))) if rec.task == "multiclass" else probs >= thr
    keep = [i for i, t in enumerate(test_ids) if t in lung_model]
    cases = [(i, j) for j in range(len(rec.labels)) for i in keep if y[i, j] == 1]
    if not cases:
        raise CxrlabError(f"{spec}: no test image with a lung mask is positive for any of the run's labels")
    rows_needed = sorted({i for i, _ in cases})
    t_dec = time.perf_counter()
    images = load_run_images(manifest, [test_ids[i] for i in rows_needed], rec, cfg.data.workers, desc="decode test")
    pos = {i: k for k, i in enumerate(rows_needed)}
    t_cam = time.perf_counter()
    maps = ex.cam_maps(predictor, layer, images, [pos[i] for i, _ in cases], [j for _, j in cases], method,
                       batch_size, desc=f"{method} CAMs")
    cam_seconds = time.perf_counter() - t_cam

    # boxes (or finding masks) of positives, in model pixels
    boxes = manifest.boxes if manifest.boxes is not None else pd.DataFrame(columns=["image", "label", "x", "y", "w", "h"])
    size = rec.preprocess.size

    def target_mask(img: str, lab: str, geom: Any) -> np.ndarray | None:
        if img in of_test and lab in maskset.structures(img):
            return maskset.in_model(img, lab, geom)
        b = boxes[(boxes["image"] == img) & (boxes["label"] == lab)]
        if b.empty:
            return None
        return ex.boxes_to_masks([[geom.to_model(tuple(map(float, r))) for r in b[["x", "y", "w", "h"]].to_numpy()]],
                                 size)[0]

    # the IoU level, on validation maps and boxes only
    t_lvl = time.perf_counter()
    lvl, rule = _choose_level(run, cfg, manifest, rec, predictor, layer, boxes, method, level, max_val, batch_size)
    cam_seconds += time.perf_counter() - t_lvl

    t_score = time.perf_counter()
    patients = test["patient"].astype(str).to_numpy()
    lungs = np.stack([lung_model[test_ids[i]] for i, _ in cases])
    lung_share = ex.energy_share(maps, lungs)
    uni_lung = ex.uniform_baseline(lungs)["share"]
    gau_lung = ex.gaussian_baseline(lungs, lvl)["share"]
    heart_share = np.array([ex.energy_share(maps[k:k + 1], heart_model[test_ids[i]][None])[0]
                            if test_ids[i] in heart_model else np.nan for k, (i, _) in enumerate(cases)])
    table_rows = []
    per_label: dict[str, AuditLabel] = {}
    seed = cfg.seed
    for j, lab in enumerate(rec.labels):
        ks = [k for k, (_, jj) in enumerate(cases) if jj == j]
        if not ks:
            continue
        ks_arr = np.array(ks)
        g = patients[[cases[k][0] for k in ks]]
        tp = np.array([bool(predicted[cases[k][0], j]) for k in ks])
        share = mean_ci(lung_share[ks_arr], g, n_boot, seed)
        uni = mean_ci(uni_lung[ks_arr], g, n_boot, seed)
        hs = heart_share[ks_arr]
        target, tvals = _target(ks_arr, cases, test_ids, maps, geometry, target_mask, lab, lvl, tp, g, n_boot, seed)
        per_label[lab] = AuditLabel(
            n=len(ks), n_tp=int(tp.sum()), lung_share=share,
            lung_share_tp=mean_ci(lung_share[ks_arr][tp], g[tp], n_boot, seed), uniform_lung_share=uni,
            gaussian_lung_share=mean_ci(gau_lung[ks_arr], g, n_boot, seed),
            heart_share=mean_ci(hs, g, n_boot, seed) if np.isfinite(hs).any() else None,
            no_energy=int(np.isnan(lung_share[ks_arr]).sum()),
            flagged=bool(share.has_ci and share.high < uni.value), target=target)
        for n_, k in enumerate(ks):
            i = cases[k][0]
            table_rows.append({"image": test_ids[i], "patient": patients[i], "label": lab, "tp": int(tp[n_]),
                               "lung_share": lung_share[k], "heart_share": heart_share[k],
                               **{f"target_{m}": v[n_] for m, v in tvals.items()}})
    order = np.argsort(np.nan_to_num(lung_share, nan=2.0))[:suspects]
    suspect_list = [{"image": test_ids[cases[k][0]], "label": rec.labels[cases[k][1]],
                     "outside": float(1 - lung_share[k])} for k in order if np.isfinite(lung_share[k])]
    score_seconds = time.perf_counter() - t_score

    t_san = time.perf_counter()
    rand = edges = dele = None
    if sanity:
        pick = np.linspace(0, len(cases) - 1, min(sanity, len(cases))).round().astype(int)
        pick = np.unique(pick)
        rows = [pos[cases[k][0]] for k in pick]
        tg = [cases[k][1] for k in pick]
        twin, twin_layer = ex.randomised_copy(opened.model, layer, seed)
        rmaps = ex.cam_maps(predictor, twin_layer, images, rows, tg, method, batch_size, desc="randomised CAMs",
                            model=twin)
        gp = patients[[cases[k][0] for k in pick]]
        rand = mean_ci(ex.spearman_per_image(maps[pick], rmaps), gp, n_boot, seed)
        e = ex.edge_maps(images[rows])
        edges = mean_ci(ex.spearman_per_image(e, ex.edge_maps(images[rows])), gp, n_boot, seed)
        gap = (ex.deletion_auc(predictor, images[rows], maps[pick], tg, order="random", seed=seed)
               - ex.deletion_auc(predictor, images[rows], maps[pick], tg))
        dele = mean_ci(gap, gp, n_boot, seed)
    sanity_seconds = time.perf_counter() - t_san

    result = AuditResult(method=method, per_label=per_label, level=lvl, level_rule=rule, mask_source=spec,
                         counts=counts, randomisation=rand, randomisation_edges=edges, deletion=dele,
                         suspects=suspect_list, n_boot=n_boot,
                         seconds={"decode": t_cam - t_dec, "cams": cam_seconds, "scoring": score_seconds,
                                  "sanity": sanity_seconds, "total": time.perf_counter() - t0,
                                  "cams_per_second": len(cases) / cam_seconds if cam_seconds > 0 else float("nan"),
                                  "cam_count": float(len(cases))})
    run.write_json(run.audit_file(method), result.to_dict())
    table = pd.DataFrame(table_rows)
    atomic_write(run.audit_images_file(method), lambda tmp: table.to_csv(tmp, index=False))
    if suspect_list:
        ks = [int(k) for k in order if np.isfinite(lung_share[k])]
        suspects_figure(images[[pos[cases[k][0]] for k in ks]], maps[ks], lungs[ks],
                        [f"{s['label']}: {100 * s['outside']:.0f}% outside" for s in suspect_list],
                        run.figure("audit_suspects", method), method)
    render_report(run)
    return result


def _test_probabilities(run: RunFolder, ids: list[str], labels: list[str]) -> np.ndarray:
    from cxrlab.tables import prob_column

    table = run.read_predictions("test").set_index("image")
    missing = [i for i in ids if i not in table.index]
    if missing:
        raise CxrlabError(f"{run.predictions_file('test')}: {len(missing)} test images have no prediction "
                          f"(e.g. {missing[0]}); run cxrlab evaluate RUN")
    return table.loc[ids, [prob_column(lab) for lab in labels]].to_numpy(float)


def _target(ks: np.ndarray, cases: list[tuple[int, int]], test_ids: list[str], maps: np.ndarray,
            geometry: dict[str, Any], target_mask: Any, lab: str, lvl: float, tp: np.ndarray, g: np.ndarray,
            n_boot: int, seed: int) -> tuple[AuditTarget | None, dict[str, np.ndarray]]:
    """Box / finding-mask metrics of one label (None where no positive has a box)."""
    tm = [target_mask(test_ids[cases[k][0]], lab, geometry[test_ids[cases[k][0]]]) for k in ks]
    have = np.array([m is not None for m in tm])
    nan = np.full(len(ks), np.nan)
    if not have.any():
        return None, {}
    m = np.stack([t for t in tm if t is not None])
    mp = maps[ks[have]]
    vals = {"share": ex.energy_share(mp, m), "hit": ex.pointing_hits(mp, m), "iou": ex.iou_at(mp, m, lvl)}
    uni, gau = ex.uniform_baseline(m), ex.gaussian_baseline(m, lvl)
    gh, tph = g[have], tp[have]
    t = AuditTarget(n=int(have.sum()), n_tp=int(tph.sum()), share=mean_ci(vals["share"], gh, n_boot, seed),
                    hit=mean_ci(vals["hit"], gh, n_boot, seed), iou=mean_ci(vals["iou"], gh, n_boot, seed),
                    hit_tp=mean_ci(vals["hit"][tph], gh[tph], n_boot, seed),
                    iou_tp=mean_ci(vals["iou"][tph], gh[tph], n_boot, seed),
                    uniform={k: mean_ci(v, gh, n_boot, seed) for k, v in uni.items()},
                    gaussian={k: mean_ci(v, gh, n_boot, seed) for k, v in gau.items()})
    full = {}
    for k, v in vals.items():
        f = nan.copy()
        f[have] = v
        full[k] = f
    return t, full


def _choose_level(run: RunFolder, cfg: Any, manifest: Any, rec: Any, predictor: Any, layer: Any, boxes: pd.DataFrame,
                  method: str, rule: str, max_val: int, batch_size: int) -> tuple[float, str]:
    """The IoU level from validation CAMs against validation boxes (never the test's)."""
    val = run_split(run, cfg, manifest, "val")
    ids = set(val["image"])
    b = boxes[boxes["image"].isin(ids) & boxes["label"].isin(rec.labels)]
    pairs = sorted({(r.image, r.label) for r in b.itertuples()})[:max_val]
    if not pairs:
        return 0.5, "fixed 0.5 (no boxes in the validation split to choose it on)"
    vids = sorted({p[0] for p in pairs})
    imgs = load_run_images(manifest, vids, rec, cfg.data.workers, desc="decode val")
    row = {v: k for k, v in enumerate(vids)}
    lab_idx = {lab: j for j, lab in enumerate(rec.labels)}
    vmaps = ex.cam_maps(predictor, layer, imgs, [row[i] for i, _ in pairs], [lab_idx[lab] for _, lab in pairs],
                        method, batch_size, desc="validation CAMs")
    if rule == "otsu":
        return ex.otsu_level(vmaps), f"Otsu on {len(pairs)} validation maps"
    geo = geometries(manifest.root, vids, rec.preprocess)
    size = rec.preprocess.size
    masks = ex.boxes_to_masks([[geo[i].to_model(tuple(map(float, r))) for r in
                                b[(b["image"] == i) & (b["label"] == lab)][["x", "y", "w", "h"]].to_numpy()]
                               for i, lab in pairs], size)
    return ex.best_level(vmaps, masks), f"best mean IoU on {len(pairs)} validation maps and boxes"


def audit_difference(run_a: str | Path, run_b: str | Path, label: str, method: str = "gradcam",
                     n_boot: int = 1000, seed: int = 0) -> tuple[Estimate, float, bool]:
    """Lung-energy share of ``label``, run A minus run B, with a bootstrap 95% CI and p-value.

    Paired (one resample of the shared images) when the two audits share their images, as two models on
    one test split do; independent otherwise (two test sets, e.g. a clean and a shortcut phantom).
    Returns (difference, p, paired).
    """
    tables = []
    for r in (run_a, run_b):
        rf = run_folder(r)
        p = rf.audit_images_file(method)
        if not p.is_file():
            raise CxrlabError(f"{rf.path}: no {p.name}; run cxrlab audit {rf.path} --method {method} first")
        t = pd.read_csv(p)
        tables.append(t[t["label"] == label])
    a, b = tables
    if a.empty or b.empty:
        raise CxrlabError(f"label {label!r}: no audited positive image in {run_a if a.empty else run_b}")
    both = a.merge(b, on="image", suffixes=("_a", "_b"))
    if len(both) >= 0.5 * min(len(a), len(b)):
        d, p = difference_ci(both["lung_share_a"].to_numpy(), both["lung_share_b"].to_numpy(),
                             both["patient_a"].astype(str).to_numpy(), paired=True, n_boot=n_boot, seed=seed)
        return d, p, True
    d, p = difference_ci(a["lung_share"].to_numpy(), b["lung_share"].to_numpy(), a["patient"].astype(str).to_numpy(),
                         b["patient"].astype(str).to_numpy(), n_boot=n_boot, seed=seed)
    return d, p, False
