"""Several sources in one run: labels merged by name, a label a source lacks is masked, not 0."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlab.config import load_config
from cxrlab.data.labels import apply_policy
from cxrlab.data.phantom import LABELS
from cxrlab.data.phantom_dataset import write_phantom
from cxrlab.data.sources import load_source
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.metrics import roc_auc
from cxrlab.train.losses import masked_bce
from cxrlab.workflows.common import build_manifest

LACKS = [lab for lab in LABELS if lab != "Effusion"]  # the csv site has no effusion column


@pytest.fixture(scope="module")
def two_sources(tiny_phantom, tmp_path_factory):
    """The shared NIH-layout phantom and a second phantom as a csv without Effusion."""
    b = write_phantom(tmp_path_factory.mktemp("site_b"), n=96, size=32, seed=11, workers=1)
    m = load_source("nih14", str(b), labels=list(LABELS))
    f = pd.DataFrame({"path": m.frame["image"], "patient": m.frame["patient"], "split": m.frame["split"]})
    f[LACKS] = m.frame[LACKS].to_numpy()
    f.to_csv(b / "labels.csv", index=False)
    return tiny_phantom, b / "labels.csv"


def _cfg(two_sources, tmp_path, **data):
    a, b = two_sources
    return load_config(None, base={
        "name": "ms", "runs_dir": str(tmp_path),
        "data": {"sources": [{"source": "nih14", "root": str(a)},
                             {"source": "csv", "root": str(b), "labels": LACKS, "name": "site_b"}],
                 "labels": list(LABELS), "image_size": 32, "workers": 1, "val_fraction": 0.2, **data},
        "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
        "train": {"epochs": 1, "batch_size": 16}, "evaluate": {"n_boot": 10}, "explain": {"enabled": False}})


def test_merged_manifest_names_labels_canonically_and_masks_the_missing_one(two_sources, tmp_path):
    m = build_manifest(_cfg(two_sources, tmp_path))
    assert "Pleural Effusion" in m.labels and "Effusion" not in m.labels  # nih14's Effusion, renamed
    site_b = m.frame["source"] == "site_b"
    assert site_b.any() and (~site_b).any()
    assert m.frame.loc[site_b, "Pleural Effusion"].isna().all()
    assert m.frame.loc[~site_b, "Pleural Effusion"].notna().all()
    assert m.absent == {"Pleural Effusion": ["site_b"]}
    assert not m.frame["image"].duplicated().any() and all((m.root / i).is_file() for i in m.frame["image"][:5])
    assert m.frame.loc[site_b, "patient"].str.startswith("site_b:").all()
    for src in ("nih14", "site_b"):  # each source keeps its own split
        assert set(m.frame.loc[m.frame["source"] == src, "split"]) == {"train", "val", "test"}


def test_missing_label_gets_no_loss_but_blanks_still_count_as_negatives(two_sources, tmp_path):
    m = build_manifest(_cfg(two_sources, tmp_path))
    j = m.labels.index("Pleural Effusion")
    site_b = (m.frame["source"] == "site_b").to_numpy()
    raw = m.targets(m.frame)
    old = apply_policy(raw, m.labels, "ignore", "negative").targets  # what the run trained on before
    assert (old[site_b, j] == 0).all()  # "not in this dataset" became a negative
    plan = apply_policy(raw, m.labels, "ignore", "negative", absent=m.absent_mask(m.frame))
    assert np.isnan(plan.targets[site_b, j]).all() and not np.isnan(plan.targets[~site_b, j]).any()
    assert plan.counts["Pleural Effusion"]["absent"] == int(site_b.sum())
    logits = torch.zeros(len(raw), len(m.labels), requires_grad=True)
    masked_bce(logits, torch.from_numpy(plan.targets)).backward()
    grad = logits.grad.numpy()
    assert (grad[site_b, j] == 0).all() and (grad[~site_b, j] != 0).all()
    assert (grad[site_b][:, [i for i in range(len(m.labels)) if i != j]] != 0).all()


def test_two_source_run_scores_the_missing_label_on_the_other_source_only(two_sources, tmp_path):
    from cxrlab.workflows import run_experiment

    run_experiment(_cfg(two_sources, tmp_path))
    run = tmp_path / "ms"
    pred = pd.read_csv(run / "predictions.csv")
    site_b = pred["source"] == "site_b"
    assert site_b.any() and pred.loc[site_b, "Pleural Effusion"].isna().all()
    ev = json.loads((run / "evaluation.json").read_text())["per_label"]["Pleural Effusion"]
    own = pred[~site_b]
    assert ev["positives"] == int((own["Pleural Effusion"] == 1).sum())
    assert ev["auc"] == pytest.approx(roc_auc(own["Pleural Effusion"].to_numpy(), own["prob_Pleural Effusion"].to_numpy()))
    rec = json.loads((run / "model.json").read_text())
    assert rec["label_source"] == "canonical" and rec["vocabulary"]["version"]
    html = (run / "report.html").read_text()
    assert "Test results per source" in html and "site_b" in html and "not in this source" in html


def test_labels_in_no_source_and_root_beside_sources_are_one_line(two_sources, tmp_path):
    with pytest.raises(CxrlabError, match="are in none of the sources"):
        build_manifest(_cfg(two_sources, tmp_path, labels=["Nodule", "Fracture"]))
    with pytest.raises(CxrlabError, match="sources and root are both set"):
        _cfg(two_sources, tmp_path, root="/elsewhere")
    with pytest.raises(CxrlabError, match="no finding of the vocabulary"):
        build_manifest(_cfg(two_sources, tmp_path, labels=["Wet Lung"]))
