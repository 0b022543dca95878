import numpy as np
import pandas as pd
import pytest
import torch

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.ensemble import ensemble_tables, fuse_by
from cxrlab.evaluate.uncertainty import uncertainty_summary
from cxrlab.inference import Predictor
from cxrlab.models import build_model
from cxrlab.train.loop import predict


def test_mc_dropout_gives_spread_and_keeps_batchnorm_frozen():
    torch.manual_seed(0)
    model = build_model("simple_cnn", 3, width=4, convs=1, dropout=0.5)
    images = torch.randint(0, 255, (10, 32, 32), dtype=torch.uint8)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    mean, std = Predictor.for_model(model, "multilabel").mc_dropout(images, passes=8)
    assert mean.shape == std.shape == (10, 3)
    assert (std > 0).any() and ((mean >= 0) & (mean <= 1)).all()
    assert torch.equal(bn.running_mean, before)
    again, _ = Predictor.for_model(model, "multilabel").mc_dropout(images, passes=8)
    assert np.allclose(mean, again)  # seeded
    with pytest.raises(CxrlabError, match="no dropout layer"):
        Predictor.for_model(build_model("simple_cnn", 3, width=4, convs=1), "multilabel").mc_dropout(images, passes=2)


def test_uncertainty_summary_splits_confident_and_uncertain():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (400, 1)).astype(float)
    std = rng.random((400, 1)) * 0.2
    mean = np.where(std < 0.1, y * 0.8 + 0.1, rng.random((400, 1)))  # confident ones are right
    s = uncertainty_summary(y, mean, std, ["A"], threshold=0.1)
    d = s["per_label"]["A"]
    assert d["uncertain_fraction"] == pytest.approx(np.mean(std > 0.1))
    assert d["auc_confident"] > 0.99 > d["auc_all"] and d["auc_uncertain"] < 0.7


def _table(probs, images=("a", "b", "c")):
    return pd.DataFrame({"image": list(images), "patient": ["1", "1", "2"], "A": [1.0, 0.0, 1.0],
                         "prob_A": probs})


def test_ensemble_mean_and_max_align_by_image():
    t1 = _table([0.2, 0.4, 0.6])
    t2 = _table([0.6, 0.0, 0.8]).iloc[[2, 0, 1]]  # other row order
    m = ensemble_tables([t1, t2], ["A"], "mean")
    assert m["prob_A"].tolist() == pytest.approx([0.4, 0.2, 0.7])
    assert ensemble_tables([t1, t2], ["A"], "max")["prob_A"].tolist() == pytest.approx([0.6, 0.4, 0.8])
    with pytest.raises(CxrlabError, match="different images"):
        ensemble_tables([t1, _table([0.1, 0.2, 0.3], images=("a", "b", "x"))], ["A"])


def test_study_fusion_of_frontal_and_lateral():
    t = pd.DataFrame({"image": ["s1/f.jpg", "s1/l.jpg", "s2/f.jpg"], "patient": ["p1", "p1", "p2"],
                      "study": ["p1/s1", "p1/s1", "p2/s1"], "A": [1.0, 1.0, 0.0], "prob_A": [0.3, 0.9, 0.2]})
    f = fuse_by(t, ["A"], "study", "max")
    assert f["image"].tolist() == ["p1/s1", "p2/s1"] and f["prob_A"].tolist() == pytest.approx([0.9, 0.2])
    assert fuse_by(t, ["A"], "study", "mean")["prob_A"].tolist() == pytest.approx([0.6, 0.2])


def test_frontal_only_and_lateral_only_runs_fuse_per_study(tmp_path):
    from cxrlab.config import load_config
    from cxrlab.data.preprocess import Preprocess
    from cxrlab.run import ModelRecord, RunFolder
    from cxrlab.workflows.ensemble import ensemble_runs

    cfg = load_config(None, ["data.root=.", "data.source=chexpert"])
    rows = {"frontal": (["s1/f.jpg", "s2/f.jpg"], [0.3, 0.2]), "lateral": (["s1/l.jpg"], [0.9])}
    for name, (images, probs) in rows.items():
        run = RunFolder(tmp_path / name)
        run.path.mkdir()
        run.write_model_record(ModelRecord.new(cfg, ["A"], Preprocess(size=32)))
        study = [f"p{i[1]}/{i[:2]}" for i in images]
        run.write_predictions(pd.DataFrame({"image": images, "patient": [s.split("/")[0] for s in study],
                                            "study": study, "A": [1.0 if i.startswith("s1") else 0.0
                                                                  for i in images], "prob_A": probs}))
    out = ensemble_runs([tmp_path / "frontal", tmp_path / "lateral"], tmp_path / "fl", how="max", by="study")
    fused = RunFolder(out).read_predictions()
    assert fused["image"].tolist() == ["p1/s1", "p2/s2"] and fused["prob_A"].tolist() == pytest.approx([0.9, 0.2])
    with pytest.raises(CxrlabError, match="different images"):  # disjoint runs without `by`: refused
        ensemble_runs([tmp_path / "frontal", tmp_path / "lateral"], tmp_path / "x")


def test_flip_tta_averages_image_and_mirror():
    torch.manual_seed(0)
    model = build_model("simple_cnn", 2, width=4, convs=1)
    images = torch.randint(0, 255, (6, 32, 32), dtype=torch.uint8)
    plain = predict(model, images, 1, torch.device("cpu"))
    mirror = predict(model, images.flip(-1), 1, torch.device("cpu"))
    tta = predict(model, images, 1, torch.device("cpu"), tta=True)
    assert np.allclose(tta, (plain + mirror) / 2, atol=1e-6)
