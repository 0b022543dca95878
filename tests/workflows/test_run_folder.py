"""The run-folder contract, resume, and a mismatched checkpoint, on a tiny phantom run."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

from conftest import run_cli
from cxrlab.config import load_config
from cxrlab.data.phantom import LABELS
from cxrlab.errors import CxrlabError
from cxrlab.models import build_model
from cxrlab.run import RunFolder
from cxrlab.workflows import export_onnx, predict_images, run_experiment
from cxrlab.workflows.common import open_model


def tiny_config(root, runs, **over):
    base = {
        "name": "tiny", "seed": 1, "runs_dir": str(runs),
        "data": {"source": "nih14", "root": str(root), "labels": list(LABELS), "image_size": 32,
                 "val_fraction": 0.2, "workers": 1},
        "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
        "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3},
        "explain": {"max_images": 10, "random_draws": 2, "figures": 4},
    }
    return load_config(None, [f"{k}={v}" for k, v in over.items()], base=base)


@pytest.fixture(scope="module")
def tiny_run(tiny_phantom, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(tiny_phantom, runs)
    summary = run_experiment(cfg)
    return RunFolder(runs / "tiny"), summary, cfg


def test_run_folder_holds_every_artifact(tiny_run):
    run, summary, cfg = tiny_run
    p = run.path
    for rel in ["config.yaml", "split.json", "metrics.jsonl", "model.json", "predictions.csv",
                "report.html", "summary.json", "checkpoints/best.safetensors",
                "checkpoints/last.safetensors", "figures/training_curves.png", "figures/roc.png",
                "figures/localization.png", "figures/cam_overlays.png"]:
        assert (p / rel).is_file(), rel
    conf = yaml.safe_load((p / "config.yaml").read_text())
    assert conf["seed"] == 1 and conf["model"]["name"] == "simple_cnn"
    assert {"torch", "cxrlab", "git_commit", "python"} <= set(conf["environment"])
    split = json.loads((p / "split.json").read_text())
    assert len(split["hash"]) == 16 and not set(split["train"]) & set(split["test"])
    rows = [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    info = json.loads((p / "model.json").read_text())
    assert info["labels"] == list(LABELS) and info["input_size"] == 32
    assert set(info["thresholds"]) == set(LABELS) and "normalization" in info
    pred = pd.read_csv(p / "predictions.csv")
    assert len(pred) == len(split["test"])
    assert {f"prob_{k}" for k in LABELS} <= set(pred.columns)
    assert pred[[f"prob_{k}" for k in LABELS]].stack().between(0, 1).all()
    state = load_file(str(p / "checkpoints/best.safetensors"))
    assert "head.weight" in state
    html = (p / "report.html").read_text()
    for alt in ["ROC curves", "training curves", "Grad-CAM overlays"]:  # embedded, not linked
        assert f"alt='{alt}'" in html
    assert "src='figures/" not in html and html.count("src='data:image/png;base64,") >= 3
    loc = summary["localization"]
    assert loc["cases"] > 0 and 0 <= loc["mean_accuracy"] <= 1


def test_model_rebuilds_from_run_folder_and_mismatch_is_a_clear_error(tiny_run):
    run, _, _ = tiny_run
    rec = open_model(run).record
    assert rec.labels == list(LABELS)
    wrong = build_model("simple_cnn", 3, width=4, convs=1)
    with pytest.raises(CxrlabError, match="does not match the model"):
        run.load_weights(wrong, "best")


def test_resume_continues_and_ends_where_an_uninterrupted_run_ends(tiny_phantom, tmp_path):
    full = run_experiment(tiny_config(tiny_phantom, tmp_path / "a", **{"train.epochs": 3}))
    # "crash" after epoch 2: run 2 epochs, then resume the same run with epochs=3
    run_experiment(tiny_config(tiny_phantom, tmp_path / "b", **{"train.epochs": 2}))
    with pytest.raises(CxrlabError, match="exists; use --resume"):
        run_experiment(tiny_config(tiny_phantom, tmp_path / "b", **{"train.epochs": 3}))
    resumed = run_experiment(tiny_config(tiny_phantom, tmp_path / "b", **{"train.epochs": 3}), resume=True)
    a = [json.loads(x) for x in (tmp_path / "a/tiny/metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b/tiny/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in b] == [1, 2, 3]
    assert b[-1]["train_loss"] == pytest.approx(a[-1]["train_loss"], rel=1e-5)
    assert resumed["macro_auc"] == pytest.approx(full["macro_auc"], abs=1e-6)


def test_empty_root_and_unknown_source_are_one_line_errors(tmp_path):
    with pytest.raises(CxrlabError, match="data.root is empty"):
        run_experiment(load_config(None, ["data.root="]))
    with pytest.raises(CxrlabError, match="unknown data source"):
        run_experiment(load_config(None, [f"data.root={tmp_path}", "data.source=nope"]))
    with pytest.raises(CxrlabError, match="no Data_Entry"):
        run_experiment(load_config(None, [f"data.root={tmp_path}"]))


def test_evaluate_and_compare_cli_on_two_runs(tiny_run, tiny_phantom):
    run, _, _ = tiny_run
    other = tiny_config(tiny_phantom, run.path.parent, **{"name": "tiny_wide", "model.options.width": 6,
                                                          "explain.enabled": False})
    run_experiment(other)
    ev_json = run.path / "ev.json"
    r = run_cli("evaluate", str(run.path), "--n-boot", "50",
                        "--json", str(ev_json))
    assert r.exit_code == 0, r.output
    ev = json.loads(ev_json.read_text())
    assert set(ev["per_label"]) == set(LABELS) and ev["n_boot"] == 50
    cmp_json = run.path / "cmp.json"
    r = run_cli("compare", str(run.path), str(run.path.parent / "tiny_wide"),
                        "--n-boot", "50", "--json", str(cmp_json))
    assert r.exit_code == 0, r.output
    c = json.loads(cmp_json.read_text())
    assert set(c["per_label"]) == set(LABELS)
    assert all(0 <= d["p"] <= 1 and d["p_holm"] >= d["p"] for d in c["per_label"].values() if d["p"] == d["p"])
    assert "Holm" in r.stdout
    r = run_cli("compare", str(run.path), str(run.path.parent / "nope"))
    assert r.exit_code == 2 and "no such run folder" in r.stderr


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "saliency"])
def test_explain_methods_give_maps_at_input_size(tiny_run, method):
    import torch

    from cxrlab.explain.cams import attribute
    from cxrlab.models import cam_layer

    run, _, _ = tiny_run
    model = open_model(run).model
    model.train()
    x = torch.randn(3, 1, 32, 32)
    maps = attribute(model, cam_layer(model), x, [0, 2, 5], method)
    assert maps.shape == (3, 32, 32) and np.isfinite(maps).all()
    assert model.training  # the caller's mode is restored


def test_explain_and_localize_cli(tiny_run, tiny_phantom, tmp_path):
    run, _, _ = tiny_run
    img = sorted((tiny_phantom / "images").glob("*.png"))[0]
    r = run_cli("explain", str(run.path), "-i", str(img), "--method",
                        "gradcam++", "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert (tmp_path / f"{img.stem}_gradcam++.png").stat().st_size > 1000
    out = tmp_path / "loc.json"
    r = run_cli("localize", str(run.path), "--boxes",
                        str(tiny_phantom / "BBox_List_2017.csv"), "--json", str(out))
    assert r.exit_code == 0, r.output
    loc = json.loads(out.read_text())
    assert loc["cases"] > 0 and set(loc["per_class"]) <= set(LABELS)
    assert "Localisation (Grad-CAM, cxrlab localize)" in (run.path / "report.html").read_text()
    r = run_cli("explain", str(run.path), "-i", str(img), "--labels",
                        "Hernia")
    assert r.exit_code == 2 and "not among the model's labels" in r.stderr


def test_uncertainty_and_ensemble_cli(tiny_phantom, tmp_path):
    run_experiment(tiny_config(tiny_phantom, tmp_path, **{"name": "drop", "model.dropout": 0.3,
                                                           "explain.enabled": False}))
    run_experiment(tiny_config(tiny_phantom, tmp_path, **{"name": "drop2", "model.dropout": 0.3,
                                                           "model.options.width": 6, "explain.enabled": False}))
    r = run_cli("uncertainty", str(tmp_path / "drop"), "--passes", "5")
    assert r.exit_code == 0, r.output
    u = json.loads((tmp_path / "drop" / "uncertainty.json").read_text())
    assert u["passes"] == 5 and set(u["per_label"]) == set(LABELS)
    assert (tmp_path / "drop" / "figures" / "mc_dropout_std.png").is_file()
    html = (tmp_path / "drop" / "report.html").read_text()
    assert "Uncertainty (MC dropout)" in html and "alt='MC dropout std histogram'" in html
    r = run_cli("ensemble", str(tmp_path / "drop"), str(tmp_path / "drop2"),
                        "--out", str(tmp_path / "ens"))
    assert r.exit_code == 0, r.output
    r = run_cli("evaluate", str(tmp_path / "ens"), "--n-boot", "20")
    assert r.exit_code == 0, r.output
    a = pd.read_csv(tmp_path / "drop" / "predictions.csv")
    b = pd.read_csv(tmp_path / "drop2" / "predictions.csv")
    e = pd.read_csv(tmp_path / "ens" / "predictions.csv")
    assert np.allclose(e["prob_Mass"], (a["prob_Mass"] + b["prob_Mass"]) / 2)


def test_thresholds_from_validation_predict_and_onnx_parity(tiny_run, tiny_phantom, tmp_path):
    run, summary, _ = tiny_run
    info = json.loads((run.path / "model.json").read_text())
    ev = json.loads((run.path / "evaluation.json").read_text())
    # (evaluation.json may have been re-made by `cxrlab evaluate` from the CSV's rounded probabilities)
    assert info["thresholds"] == pytest.approx({k: v["threshold"] for k, v in ev["per_label"].items()}, rel=1e-5)
    imgs = sorted((tiny_phantom / "images").glob("*.png"))[:5]
    torch_out = predict_images(run.path, imgs)
    export_onnx(run.path, tmp_path / "m.onnx")
    (run.path / "model.onnx").write_bytes((tmp_path / "m.onnx").read_bytes())
    onnx_out = predict_images(run.path, imgs, engine="onnx")
    cols = [f"prob_{k}" for k in LABELS]
    assert np.allclose(torch_out[cols].to_numpy(), onnx_out[cols].to_numpy(), atol=1e-5)
    assert (torch_out["prediction"] == onnx_out["prediction"]).all()
    # the OOD score from the ONNX graph's own features output (one pass), as PyTorch gives it
    from cxrlab.workflows.ood import open_scorer
    from cxrlab.workflows.predict import open_predictor

    onnx_predictor, _ = open_predictor(run, "onnx")
    assert onnx_predictor.has_features and open_scorer(run, onnx_predictor).predictor is onnx_predictor
    assert np.allclose(torch_out["ood_score"], onnx_out["ood_score"], rtol=1e-3, atol=1e-3)
    assert (torch_out["ood_flag"] == onnx_out["ood_flag"]).all()
    out = tmp_path / "pred.csv"
    r = run_cli("predict", str(run.path), "-i", str(imgs[0]), "-i",
                        str(imgs[1]), "--csv", str(out))
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(out)) == 2
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    r = run_cli("predict", str(run.path), "-i", str(bad))
    assert r.exit_code == 2 and "bad.png" in r.stderr and "Traceback" not in r.stderr


def test_resume_with_another_architecture_is_a_clear_error(tiny_phantom, tmp_path):
    run_experiment(tiny_config(tiny_phantom, tmp_path, **{"train.epochs": 1, "explain.enabled": False}))
    with pytest.raises(CxrlabError, match="does not match this model"):
        run_experiment(tiny_config(tiny_phantom, tmp_path, **{"train.epochs": 2, "model.options.width": 6,
                                                                "explain.enabled": False}), resume=True)
