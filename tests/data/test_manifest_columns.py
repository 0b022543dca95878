"""Every manifest keeps source, age, sex and site; prediction tables carry them."""

import numpy as np
import pandas as pd
import pytest

from conftest import REAL
from cxrlab.data.manifest import DEMOGRAPHICS, normalize_age, normalize_sex
from cxrlab.data.phantom import LABELS
from cxrlab.data.phantom_dataset import write_phantom_dataset
from cxrlab.data.sources import load_source
from cxrlab.errors import CxrlabError
from cxrlab.tables import prediction_table

LABEL_CSVS = REAL / "label_csvs"


def test_nih_phantom_keeps_age_and_sex_from_data_entry(tiny_phantom):
    m = load_source("nih14", str(tiny_phantom), labels=list(LABELS))
    entry = pd.read_csv(tiny_phantom / "Data_Entry_2017.csv", usecols=[0, 4, 5])
    entry.columns = ["name", "age", "sex"]
    frame = m.frame.assign(name=m.frame["image"].str.split("/").str[-1]).merge(entry, on="name",
                                                                                suffixes=("", "_csv"))
    assert len(frame) == len(m.frame) and set(DEMOGRAPHICS) <= set(m.frame.columns)
    assert (m.frame["source"] == "nih14").all()
    np.testing.assert_array_equal(frame["age"].to_numpy(), frame["age_csv"].astype(float).to_numpy())
    assert (frame["sex"] == frame["sex_csv"]).all() and set(frame["sex"]) <= {"M", "F"}


def test_chexpert_phantom_keeps_age_and_sex(tmp_path):
    ps = write_phantom_dataset("chexpert", tmp_path, n=24, size=32, seed=1, workers=1)
    m = load_source(ps.source, str(ps.root), labels=ps.labels)
    raw = pd.concat([pd.read_csv(ps.root / f) for f in ("train.csv", "valid.csv")], ignore_index=True)
    by = raw.set_index("Path")
    assert (m.frame["source"] == "chexpert").all()
    np.testing.assert_array_equal(m.frame["age"].to_numpy(), by.loc[m.frame["image"], "Age"].astype(float).to_numpy())
    expect = by.loc[m.frame["image"], "Sex"].map({"Male": "M", "Female": "F"}).fillna("").to_numpy()
    assert (m.frame["sex"].to_numpy() == expect).all()


def test_kermany_has_source_and_empty_demographics(tmp_path):
    ps = write_phantom_dataset("kermany", tmp_path, n=40, size=32, seed=1, workers=1)
    m = load_source(ps.source, str(ps.root))
    assert (m.frame["source"] == "kermany").all() and m.frame["age"].isna().all()
    assert (m.frame["sex"] == "").all() and (m.frame["site"] == "").all()


def _csv(tmp_path, tiny_phantom, **extra):
    m = load_source("nih14", str(tiny_phantom), labels=["Nodule"])
    f = pd.DataFrame({"path": [str(tiny_phantom / p) for p in m.frame["image"]][:6], "Nodule": 0})
    for k, v in extra.items():
        f[k] = v
    path = tmp_path / "labels.csv"
    f.to_csv(path, index=False)
    return path


def test_csv_reads_optional_columns_normalised(tmp_path, tiny_phantom):
    path = _csv(tmp_path, tiny_phantom, age=["34", "058Y", "", "6M", "71.5", "200"],
                sex=["male", "F", "", "Female", "m", "unknown"], site=["A", "A", "B", "", "B", "A"],
                source=["hospA"] * 5 + [""])
    m = load_source("csv", str(path), labels=["Nodule"])
    np.testing.assert_allclose(m.frame["age"].to_numpy(), [34, 58, np.nan, 0.5, 71.5, np.nan])  # 200: unknown
    assert m.frame["sex"].tolist() == ["M", "F", "", "F", "M", ""]
    assert m.frame["site"].tolist() == ["A", "A", "B", "", "B", "A"]
    assert m.frame["source"].tolist() == ["hospA"] * 5 + ["csv"]


@pytest.mark.parametrize(("column", "values", "words"), [
    ("age", ["34", "forty", "", "", "", ""], "'age' holds 'forty' (line 3)"),
    ("sex", ["M", "F", "X?", "", "", ""], "'sex' holds 'X?' (line 4)"),
])
def test_bad_age_or_sex_is_one_line_naming_file_and_row(tmp_path, tiny_phantom, column, values, words):
    path = _csv(tmp_path, tiny_phantom, **{column: values})
    with pytest.raises(CxrlabError) as e:
        load_source("csv", str(path), labels=["Nodule"])
    assert str(path) in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


def test_normalisers_keep_the_index():
    s = pd.Series(["Male", "Female"], index=[5, 9])
    assert normalize_sex(s, "f", "Sex").index.tolist() == [5, 9]
    assert normalize_age(pd.Series(["1", "2"], index=[5, 9]), "f", "Age").index.tolist() == [5, 9]


def test_prediction_table_carries_the_demographic_columns(tiny_phantom):
    m = load_source("nih14", str(tiny_phantom), labels=["Nodule", "Mass"])
    y = m.targets(m.frame)
    table = prediction_table(m.frame, y, np.full_like(y, 0.5), m.labels)
    for col in DEMOGRAPHICS:
        assert (table[col].fillna("").to_numpy() == m.frame[col].fillna("").to_numpy()).all()
    bare = prediction_table(m.frame[["image", "patient", "Nodule", "Mass"]], y, y, m.labels)
    assert not set(DEMOGRAPHICS) & set(bare.columns)


@pytest.mark.skipif(not (LABEL_CSVS / "Data_Entry_2017_v2020.csv.gz").is_file(), reason="real NIH tables absent")
def test_real_nih_tables_give_age_and_sex_for_every_image():
    from cxrlab.data.sources.nih import nih_tables

    frame, _ = nih_tables(LABEL_CSVS / "Data_Entry_2017_v2020.csv.gz", LABEL_CSVS / "train_val_list.txt.gz",
                          LABEL_CSVS / "test_list.txt.gz")
    assert len(frame) == 112_120
    assert set(frame["sex"]) == {"M", "F"} and frame["age"].notna().all()
    assert 0 <= frame["age"].min() and frame["age"].max() <= 120 and 40 < frame["age"].mean() < 55


CHEXPERT_CSV = next(iter(sorted(REAL.glob("**/CheXpert*/train.csv"))), None) if REAL.is_dir() else None


@pytest.mark.skipif(CHEXPERT_CSV is None, reason="real CheXpert train.csv absent")
def test_real_chexpert_table_gives_age_and_sex():
    from cxrlab.data.sources.chexpert import COMPETITION, read_chexpert_csv

    frame = read_chexpert_csv(CHEXPERT_CSV, list(COMPETITION))
    assert set(frame["sex"]) <= {"M", "F", ""} and frame["age"].notna().mean() > 0.99
