"""NIH adjudicated labels (issue 19): Majkowska et al. 2020's four findings as an ``nih14`` option."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import REAL, needs_real
from cxrlab.data.sources import load_source
from cxrlab.data.sources.nih import ADJUDICATED, nih14, read_relabels
from cxrlab.errors import CxrlabError

TABLE = REAL / "label_csvs" / "google2019_nih-chest-xray-labels.csv.gz"
HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],Fracture,Pneumothorax,Airspace opacity,"
          "Nodule or mass,Set Id")


@needs_real
def test_real_table_reads_with_the_counts_pandas_gives() -> None:
    if not TABLE.is_file():
        pytest.skip(f"{TABLE} not found")
    raw = pd.read_csv(TABLE)
    table = read_relabels(TABLE)
    assert len(table) == len(raw) and list(table["image"]) == list(raw["Image Index"])
    for col in ADJUDICATED:
        assert int(table[col].sum()) == int((raw[col] == "YES").sum())
        assert int((table[col] == 0).sum()) == int((raw[col] == "NO").sum())
    assert table["set"].value_counts().to_dict() == raw["Set Id"].value_counts().to_dict()
    # the two sets follow NIH's official split
    import gzip

    test = set(gzip.open(REAL / "label_csvs" / "test_list.txt.gz", "rt").read().split())
    assert (table["image"].isin(test) == (table["set"] == "test")).all()


def _relabel_file(root, path, rows: int, bad: str | None = None):
    entry = pd.read_csv(root / "Data_Entry_2017.csv")
    lines = [HEADER]
    for k, name in enumerate(entry["Image Index"][:rows]):
        vals = ["YES" if (k + j) % (3 + j) == 0 else "NO" for j in range(4)]
        if bad and k == 2:
            vals[1] = bad
        lines.append(f"{name},No Finding,0,1,50,M,PA,10,10,0.1,0.1,{','.join(vals)},{'test' if k % 2 else 'val'}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_relabels_option_replaces_the_labels_and_split(tmp_path, tiny_phantom) -> None:
    path = _relabel_file(tiny_phantom, tmp_path / "google2019_nih-chest-xray-labels.csv", 30)
    plain = nih14(str(tiny_phantom))
    m = nih14(str(tiny_phantom), options={"relabels": str(path)})
    want = pd.read_csv(path)
    assert m.labels == list(ADJUDICATED) and len(m.frame) == 30
    assert m.boxes is None  # NIH's boxes name NIH's labels
    got = m.frame.assign(name=m.frame["image"].str.rsplit("/", n=1).str[-1]).set_index("name")
    for col in ADJUDICATED:
        assert (got.loc[want["Image Index"], col].to_numpy() == (want[col] == "YES").to_numpy()).all()
    assert (got.loc[want["Image Index"], "split"].to_numpy() == want["Set Id"].to_numpy()).all()
    # patient, view, age, sex come from NIH's own table, as without the option
    ref = plain.frame.set_index("image").loc[m.frame["image"]]
    assert (ref["patient"].to_numpy() == m.frame["patient"].to_numpy()).all()
    sub = nih14(str(tiny_phantom), labels=["Pneumothorax"], options={"relabels": str(path)})
    assert sub.labels == ["Pneumothorax"] and "Fracture" not in sub.frame
    full = load_source("nih14", str(tiny_phantom), options={"relabels": str(path)})  # splits complete
    assert set(full.frame["split"]) == {"test", "val"}


def test_relabels_bad_input_is_one_line(tmp_path, tiny_phantom) -> None:
    bad = _relabel_file(tiny_phantom, tmp_path / "bad.csv", 10, bad="MAYBE")
    with pytest.raises(CxrlabError, match=r"bad.csv: column 'Pneumothorax' holds 'MAYBE'"):
        nih14(str(tiny_phantom), options={"relabels": str(bad)})
    with pytest.raises(CxrlabError, match="unknown labels \\['Mass'\\]; the adjudicated ones"):
        nih14(str(tiny_phantom), labels=["Mass"], options={"relabels": str(_relabel_file(tiny_phantom, tmp_path / "a.csv", 5))})
    with pytest.raises(CxrlabError, match="file not found"):
        nih14(str(tiny_phantom), options={"relabels": "nope.csv"})
    (tmp_path / "cols.csv").write_text("Image Index,Fracture\nx.png,YES\n")
    with pytest.raises(CxrlabError, match="missing columns"):
        nih14(str(tiny_phantom), options={"relabels": str(tmp_path / "cols.csv")})
    (tmp_path / "other.csv").write_text(HEADER + "\n99999999_000.png,x,0,1,5,M,PA,1,1,1,1,NO,NO,NO,NO,test\n")
    with pytest.raises(CxrlabError, match="1 adjudicated images are not in the NIH table"):
        nih14(str(tiny_phantom), options={"relabels": str(tmp_path / "other.csv")})
