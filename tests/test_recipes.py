"""Every shipped recipe is a valid config (and the phantom one runs end to end in test_learning)."""

from pathlib import Path

import pytest

from cxrlab.config import load_config

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_there_is_a_recipe_per_seed_paper():
    assert len(RECIPES) >= 6


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(path):
    cfg = load_config(path)
    assert cfg.data.source in {"nih14", "chexpert", "kermany", "folder", "csv", "npz"}
    assert cfg.data.root


def test_nih_without_official_split_is_stratified_by_patient(tiny_phantom):
    from cxrlab.data.sources import load_source

    m = load_source("nih14", str(tiny_phantom), labels=["Mass", "Nodule"], options={"official_split": False})
    sets = m.frame.groupby("split")["patient"].apply(set)
    assert set(sets.index) == {"train", "val", "test"}
    assert not (sets["train"] & sets["test"]) and not (sets["train"] & sets["val"])
