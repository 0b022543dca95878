"""NIH ChestX-ray14 (Wang et al., CVPR 2017) in its published layout.

Disk layout under ``root``::

    Data_Entry_2017.csv | Data_Entry_2017_v2020.csv   (optionally .gz)
    train_val_list.txt, test_list.txt                  official split (by patient)
    BBox_List_2017.csv                                 optional, 8 classes, x,y,w,h
    images/*.png  or  images_001/images/*.png ... images_012/...

Label encoding: ``Finding Labels`` is a ``|``-separated list of the 14 findings
or ``No Finding``; each label column is 1 if listed, else 0 (NIH has no
uncertain labels).  ``test_list.txt`` is the test split; the validation split
is carved from ``train_val`` by patient (``data.val_fraction``), since NIH
publishes none.  Patient ids lose their leading zeros (``00000001`` -> ``1``).
``Patient Age`` and ``Patient Gender`` become the manifest's ``age`` (years) and ``sex`` (M/F);
``site`` stays empty (one hospital; ``source`` says which).
Option ``relabels: FILE`` (Majkowska et al.'s ``google2019_nih-chest-xray-labels.csv[.gz]``;
relative to ``root`` or the working directory) keeps only the 4,376 adjudicated images, with the four
adjudicated findings (:data:`ADJUDICATED`: YES = 1, NO = 0) as labels and the table's ``Set Id`` as
split (``test``, ``val``), so a run can be scored against radiologists' labels.
Option ``official_split: false`` ignores the lists and lets cxrlab split by
patient with iterative stratification (``data.fractions``), as the project
report "Chest X-Ray Image Classification using Deep Learning approach" does.

The cxrlab phantom writes this same layout with a subset of the labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest, normalize_age, normalize_sex
from cxrlab.data.sources import check_options, register_source
from cxrlab.errors import CxrlabError

NIH14_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema",
    "Fibrosis", "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening",
    "Pneumonia", "Pneumothorax",
)
_DATA_ENTRY_COLUMNS = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID",
                       "Patient Age", "Patient Gender", "View Position")


def _find_one(root: Path, patterns: tuple[str, ...], what: str) -> Path:
    for pat in patterns:
        hits = sorted(root.glob(pat))
        if hits:
            return hits[0]
    raise CxrlabError(f"{root}: no {what} found (looked for {', '.join(patterns)})")


def read_data_entry(path: Path) -> pd.DataFrame:
    """Read a Data_Entry table; only the first seven columns are used.

    The NIH header splits ``OriginalImage[Width,Height]`` over a comma, so rows
    have more fields than header names: columns are taken by position.
    """
    try:
        head = pd.read_csv(path, nrows=0)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as e:
        raise CxrlabError(f"{path}: cannot read CSV ({e})") from None
    missing = [c for c in _DATA_ENTRY_COLUMNS if c not in head.columns]
    if missing:
        raise CxrlabError(f"{path}: missing columns {missing}")
    positions = [list(head.columns).index(c) for c in _DATA_ENTRY_COLUMNS]
    frame = pd.read_csv(path, header=None, skiprows=1, usecols=positions, dtype=str,
                        keep_default_na=False)
    frame.columns = [_DATA_ENTRY_COLUMNS[positions.index(p)] for p in sorted(positions)]
    return frame


def read_bbox_list(path: Path) -> pd.DataFrame:
    """Read ``BBox_List_2017.csv``: image, label, x, y, w, h (one box per row)."""
    frame = pd.read_csv(path, header=None, skiprows=1, usecols=range(6))
    frame.columns = ["image", "label", "x", "y", "w", "h"]
    bad = frame[["x", "y", "w", "h"]].isna().any(axis=1)
    if bad.any():
        raise CxrlabError(f"{path}: {int(bad.sum())} box rows with missing coordinates "
                          f"(first: {frame.loc[bad, 'image'].iloc[0]})")
    frame["label"] = frame["label"].replace({"Infiltrate": "Infiltration"})
    return frame


def _read_list(path: Path) -> list[str]:
    if path.suffix == ".gz":
        import gzip

        text = gzip.open(path, "rt").read()
    else:
        text = path.read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def _image_index(root: Path) -> dict[str, str]:
    """Map image file name -> path relative to root, over ``images*/`` folders."""
    index: dict[str, str] = {}
    for folder in sorted(root.glob("images*")):
        inner = folder / "images" if (folder / "images").is_dir() else folder
        for p in inner.glob("*.png"):
            index[p.name] = str(p.relative_to(root))
    return index


def label_matrix(findings: pd.Series, labels: list[str], origin: Path) -> pd.DataFrame:
    dummies = findings.str.get_dummies(sep="|")
    unknown = sorted(set(dummies.columns) - set(NIH14_LABELS) - {"No Finding"})
    if unknown:
        raise CxrlabError(f"{origin}: unknown labels in 'Finding Labels': {unknown}")
    return pd.DataFrame({lab: dummies[lab].astype(np.float32) if lab in dummies else np.float32(0)
                         for lab in labels}, index=findings.index)


def nih_tables(entry_path: Path, train_val_path: Path, test_path: Path,
               labels: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The NIH label tables as a manifest frame (``image`` = file name, official split).

    Pure table work, no image access: vectorised, a second or two for the full
    112,120-row table.  Images in neither list are dropped (none are in the
    official files).
    """
    labels = list(labels) if labels else list(NIH14_LABELS)
    bad = [lab for lab in labels if lab not in NIH14_LABELS]
    if bad:
        raise CxrlabError(f"nih14: unknown labels {bad}; known: {', '.join(NIH14_LABELS)}")
    entry = read_data_entry(entry_path)
    names = entry["Image Index"]
    dup = names.duplicated()
    if dup.any():
        raise CxrlabError(f"{entry_path}: {int(dup.sum())} duplicate image ids (first: {names[dup].iloc[0]})")
    test_names = set(_read_list(test_path))
    trainval_names = set(_read_list(train_val_path))
    both = test_names & trainval_names
    if both:
        raise CxrlabError(f"{test_path}: {len(both)} images are in both split lists (first: {sorted(both)[0]})")
    unknown = (test_names | trainval_names) - set(names)
    if unknown:
        raise CxrlabError(f"{train_val_path.parent}: {len(unknown)} images in the split lists are not in "
                          f"{entry_path.name} (first: {sorted(unknown)[0]})")
    in_test = names.isin(test_names).to_numpy()
    in_trainval = names.isin(trainval_names).to_numpy()
    keep = in_test | in_trainval
    frame = pd.DataFrame({
        "image": names.to_numpy(),
        "patient": entry["Patient ID"].astype(str).str.lstrip("0").to_numpy(),
        "view": entry["View Position"].to_numpy(),
        "split": np.where(in_test, "test", "train"),
        "source": "nih14",
        "age": normalize_age(entry["Patient Age"], entry_path, "Patient Age").to_numpy(),
        "sex": normalize_sex(entry["Patient Gender"], entry_path, "Patient Gender").to_numpy(),
        "site": "",
    })[keep].reset_index(drop=True)
    labmat = label_matrix(entry.loc[keep, "Finding Labels"].reset_index(drop=True), labels, entry_path)
    return pd.concat([frame, labmat], axis=1), labels


#: The four findings radiologists adjudicated for 4,376 NIH images (Majkowska et al., "Chest
#: Radiograph Interpretation with Deep Learning Models", Radiology 2020; the table
#: ``google2019_nih-chest-xray-labels.csv``), and the canonical finding each means, with how
#: (the vocabulary's kinds): a run with NIH's own labels is scored on them through this map.
ADJUDICATED: dict[str, tuple[str, str]] = {
    "Fracture": ("Fracture", "exact"),
    "Pneumothorax": ("Pneumothorax", "exact"),
    "Airspace opacity": ("Lung Opacity", "synonym"),
    "Nodule or mass": ("Lung Lesion", "synonym"),
}
_RELABEL_VALUES = {"YES": 1.0, "NO": 0.0, "": np.nan}


def read_relabels(path: Path) -> pd.DataFrame:
    """The adjudicated table: ``image``, ``set`` (``test``/``val``) and the four findings as 1/0 (blank: NaN).

    Majkowska et al.'s two sets are disjoint from each other and follow NIH's official split:
    ``test`` images are in ``test_list.txt``, ``val`` images in ``train_val_list.txt``.
    """
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as e:
        raise CxrlabError(f"{path}: cannot read the adjudicated-label CSV ({e})") from None
    missing = [c for c in ("Image Index", "Set Id", *ADJUDICATED) if c not in table.columns]
    if missing:
        raise CxrlabError(f"{path}: missing columns {missing} (not google2019_nih-chest-xray-labels.csv?)")
    out = pd.DataFrame({"image": table["Image Index"].str.strip(), "set": table["Set Id"].str.strip()})
    for col in ADJUDICATED:
        raw = table[col].str.strip().str.upper()
        bad = ~raw.isin(list(_RELABEL_VALUES))
        if bad.any():
            raise CxrlabError(f"{path}: column {col!r} holds {raw[bad].iloc[0]!r} in {int(bad.sum())} rows "
                              f"(first: {out.loc[bad, 'image'].iloc[0]}); expected YES, NO or blank")
        out[col] = raw.map(_RELABEL_VALUES).astype(np.float32)
    bad = ~out["set"].isin(["test", "val"])
    if bad.any():
        raise CxrlabError(f"{path}: 'Set Id' holds {out.loc[bad, 'set'].iloc[0]!r} (expected test or val)")
    dup = out["image"].duplicated()
    if dup.any():
        raise CxrlabError(f"{path}: {int(dup.sum())} duplicate image ids (first: {out.loc[dup, 'image'].iloc[0]})")
    return out


def apply_relabels(frame: pd.DataFrame, relabels: pd.DataFrame, labels: list[str] | None,
                   origin: Path) -> tuple[pd.DataFrame, list[str]]:
    """The manifest frame of the adjudicated images only, its NIH labels replaced by the adjudicated ones.

    The split is the table's ``Set Id`` (``test``, ``val``): no image is left for training, since
    these labels exist to score a run, not to train one.
    """
    labels = list(labels) if labels else list(ADJUDICATED)
    bad = [lab for lab in labels if lab not in ADJUDICATED]
    if bad:
        raise CxrlabError(f"nih14 with relabels: unknown labels {bad}; the adjudicated ones: {', '.join(ADJUDICATED)}")
    names = frame["image"].map(lambda p: Path(p).name)
    unknown = sorted(set(relabels["image"]) - set(names))
    if unknown:
        raise CxrlabError(f"{origin}: {len(unknown)} adjudicated images are not in the NIH table (first: {unknown[0]})")
    base = frame.drop(columns=[c for c in NIH14_LABELS if c in frame.columns]).assign(_name=names.to_numpy())
    out = base.merge(relabels.rename(columns={"image": "_name"}), on="_name", how="inner", validate="one_to_one")
    out["split"] = out.pop("set")
    return out.drop(columns=["_name", *[c for c in ADJUDICATED if c not in labels]]), labels


@register_source("nih14")
def nih14(root: str, labels: list[str] | None = None, options: dict | None = None) -> Manifest:
    """Read ChestX-ray14 at ``root`` into a Manifest with the official test split."""
    options = options or {}
    check_options("nih14", options, {"official_split", "relabels"})
    base = Path(root)
    if not base.is_dir():
        raise CxrlabError(f"{base}: dataset folder not found")
    entry_path = _find_one(base, ("Data_Entry_2017*.csv", "Data_Entry_2017*.csv.gz"), "Data_Entry_2017 CSV")
    requested = labels
    frame, labels = nih_tables(
        entry_path,
        _find_one(base, ("train_val_list.txt", "train_val_list.txt.gz"), "train_val_list.txt"),
        _find_one(base, ("test_list.txt", "test_list.txt.gz"), "test_list.txt"),
        None if options.get("relabels") else labels,
    )
    if options.get("relabels"):  # score against radiologists' labels (Majkowska et al. 2020)
        path = Path(str(options["relabels"])).expanduser()
        path = path if path.is_absolute() or not (base / path).is_file() else base / path
        if not path.is_file():
            raise CxrlabError(f"data.options.relabels: {path}: file not found")
        frame, labels = apply_relabels(frame, read_relabels(path), requested, path)
        entry_path = path  # errors below name the table the rows came from
    index = _image_index(base)
    if not index:
        raise CxrlabError(f"{base}: no PNG images under images*/")
    rel = frame["image"].map(index)
    missing = rel.isna()
    if missing.any():
        examples = ", ".join(frame.loc[missing, "image"].head(3))
        raise CxrlabError(f"{entry_path}: {int(missing.sum())} listed images not found under "
                          f"{base}/images*/ (first: {examples})")
    frame["image"] = rel.to_numpy()
    if not options.get("official_split", True):  # e.g. the fusion report's stratified 70/10/20 by patient
        frame["split"] = ""

    boxes = None
    bbox_hits = sorted(base.glob("BBox_List_2017.csv*"))
    if bbox_hits and not options.get("relabels"):  # NIH's boxes name NIH's labels, not the adjudicated ones
        boxes = read_bbox_list(bbox_hits[0])
        unknown = sorted(set(boxes["image"]) - set(index))
        if unknown:
            raise CxrlabError(f"{bbox_hits[0]}: {len(unknown)} boxed images not found under images*/ "
                              f"(first: {unknown[0]})")
        boxes["image"] = boxes["image"].map(index)
    return Manifest(frame=frame, root=base, labels=labels, task="multilabel", boxes=boxes,
                    origin=str(entry_path))
