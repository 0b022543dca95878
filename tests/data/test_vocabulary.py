"""The label vocabulary: names, not positions; a user file extends it; bad files are one line."""

import numpy as np
import pytest

from cxrlab.data.phantom import LABELS
from cxrlab.data.sources.chexpert import COMPETITION, OBSERVATIONS
from cxrlab.data.sources.nih import NIH14_LABELS
from cxrlab.data.vocabulary import KINDS, LabelMatch, Vocabulary, combine
from cxrlab.errors import CxrlabError


def test_shipped_vocabulary_covers_every_source_column():
    v = Vocabulary.load()
    assert v.version
    for source, columns in (("nih14", NIH14_LABELS), ("chexpert", OBSERVATIONS), ("kermany", ["Pneumonia"])):
        for col in columns:
            name, kind = v.canonical(source, col)
            assert kind in KINDS and kind != "none" and name in v.names, (source, col)


def test_effusion_is_renamed_pleural_effusion_and_missing_labels_are_listed():
    v = Vocabulary.load()
    matches, lacking = v.match(list(LABELS), "nih14", "chexpert", list(COMPETITION))
    by = {m.model_label: m for m in matches}
    assert by["Effusion"] == LabelMatch("Effusion", "Pleural Effusion", "Pleural Effusion", "renamed",
                                        ("Pleural Effusion",))
    assert by["Cardiomegaly"].kind == "exact" and by["Cardiomegaly"].target_column == "Cardiomegaly"
    assert not by["Nodule"].evaluable and by["Nodule"].kind == "none"  # not evaluable, never a negative
    assert lacking == ["Atelectasis", "Edema"]


def test_matching_is_by_name_never_by_position():
    v = Vocabulary.load()
    cols = list(reversed(COMPETITION))
    matches, _ = v.match(["Cardiomegaly", "Effusion"], "nih14", "chexpert", cols)
    assert [m.target_column for m in matches] == ["Cardiomegaly", "Pleural Effusion"]


def test_phantom_aliases_and_unlisted_sources_map_by_name():
    v = Vocabulary.load()
    assert v.canonical("phantom-chexpert", "Pleural Effusion") == ("Pleural Effusion", "exact")
    assert v.canonical("npz", "TB") == ("Tuberculosis", "renamed")
    assert v.canonical("csv", "Nodule") == ("Nodule", "exact")
    assert v.canonical("csv", "Chest Tube") == (None, "none")
    assert v.canonical("kermany", "NORMAL") == ("No Finding", "synonym")


def test_several_to_one_merges_columns_positive_if_any():
    v = Vocabulary.load()
    matches, lacking = v.match(["Nodule"], "nih14", "padchest", ["nodule", "multiple nodules", "exclude"])
    assert matches[0].kind == "several-to-one"
    assert matches[0].target_columns == ("nodule", "multiple nodules")
    assert lacking == ["exclude"]
    vals = np.array([[1, 0], [0, -1], [0, 0], [np.nan, np.nan], [np.nan, 0]], dtype=np.float32)
    np.testing.assert_array_equal(combine(vals), np.array([1, -1, 0, np.nan, 0], dtype=np.float32))


def test_user_file_extends_overrides_and_changes_the_version(tmp_path):
    base = Vocabulary.load()
    user = tmp_path / "vocab.yaml"
    user.write_text("version: site7\ncanonical: [Chest Tube]\nsources:\n  site7:\n"
                    "    tube: {canonical: Chest Tube, kind: renamed}\n    Erguss: {canonical: Pleural Effusion, kind: synonym}\n"
                    "  nih14:\n    Hernia: none\n")
    v = Vocabulary.load(user)
    assert v.version != base.version and v.version.startswith(base.version + "+site7:")
    assert v.record() == {"version": v.version, "user_file": str(user)}
    assert v.canonical("site7", "tube") == ("Chest Tube", "renamed")
    assert v.canonical("nih14", "Hernia") == (None, "none")
    matches, _ = v.match(["Effusion"], "nih14", "site7", ["Erguss", "tube"])
    assert matches[0].target_column == "Erguss" and matches[0].kind == "synonym"  # weaker side wins


@pytest.mark.parametrize(("text", "words"), [
    ("sources:\n  nih14:\n    Effusion: {canonical: Pleural Effusion, kind: guessed}\n", "unknown kind 'guessed'"),
    ("sources:\n  nih14:\n    Effusion: {canonical: Wet Lung, kind: renamed}\n", "'Wet Lung' is not a canonical"),
    ("labels: [A]\n", "unknown keys ['labels']"),
    ("[1, 2]\n", "is a mapping"),
    ("sources: {nih14: {a: b: c}}\n", "cannot read"),
])
def test_bad_user_file_is_one_line_naming_it(tmp_path, text, words):
    path = tmp_path / "v.yaml"
    path.write_text(text)
    with pytest.raises(CxrlabError) as e:
        Vocabulary.load(path)
    msg = str(e.value)
    assert str(path) in msg and words in msg and "\n" not in msg


def test_missing_user_file_names_the_key(tmp_path):
    with pytest.raises(CxrlabError, match="data.vocabulary"):
        Vocabulary.load(tmp_path / "nope.yaml")


def test_label_match_round_trips():
    m = LabelMatch("Effusion", "Pleural Effusion", "Pleural Effusion", "renamed", ("Pleural Effusion",))
    assert LabelMatch.from_dict(m.to_dict()) == m


def test_nih_adjudicated_columns_map_as_nih_adjudicated_says():
    """``nih14 -o relabels=FILE`` speaks Majkowska et al.'s column names: the vocabulary maps them (issue 19)."""
    from cxrlab.data.sources.nih import ADJUDICATED
    from cxrlab.workflows.external import vocabulary_source

    v = Vocabulary.load()
    spelt = vocabulary_source("nih14", {"relabels": "google2019_nih-chest-xray-labels.csv.gz"})
    assert spelt != "nih14" and vocabulary_source("nih14", {}) == "nih14"
    for col, (name, kind) in ADJUDICATED.items():
        assert v.canonical(spelt, col) == (name, kind), col
    nih, lacking = v.match(list(NIH14_LABELS), "nih14", spelt, list(ADJUDICATED))
    found = {m.model_label: (m.target_column, m.kind) for m in nih if m.evaluable}
    assert found == {"Pneumothorax": ("Pneumothorax", "exact")}
    assert sorted(lacking) == ["Airspace opacity", "Fracture", "Nodule or mass"]
    cx, _ = v.match(["Lung Opacity", "Lung Lesion", "Fracture"], "chexpert", spelt, list(ADJUDICATED))
    assert [(m.target_column, m.kind) for m in cx] == [("Airspace opacity", "synonym"), ("Nodule or mass", "synonym"),
                                                       ("Fracture", "exact")]
