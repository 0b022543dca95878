"""SIIM-ACR Pneumothorax: the competition's run-length code, the reader on its phantom layout, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REAL, needs_real, run_cli
from cxrlab.data.masks import read_masks
from cxrlab.data.phantom_layouts.siim import image_id, render_siim, write_phantom_siim
from cxrlab.data.sources import load_source
from cxrlab.data.sources.siim import rle_box, siim_masks, siim_rle_decode, siim_rle_encode
from cxrlab.errors import CxrlabError

SEED, N, SIZE, FRACTION = 4, 36, 64, 0.3


def competition_rle2mask(rle: str, width: int, height: int) -> np.ndarray:
    """The competition's ``mask_functions.rle2mask`` as torchxrayvision copies it, then ``.T`` as it is used."""
    mask = np.zeros(width * height)
    array = np.asarray([int(x) for x in rle.split()])
    current = 0
    for start, length in zip(array[0::2], array[1::2], strict=True):
        current += start
        mask[current:current + length] = 1
        current += length
    return mask.reshape(width, height).T.astype(bool)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_siim(tmp_path_factory.mktemp("siim"), n=N, size=SIZE, seed=SEED,
                              pneumothorax_fraction=FRACTION, split_fraction=0.5, workers=1)


def test_code_by_hand_and_round_trip() -> None:
    m = np.array([[0, 1], [1, 1], [0, 0]], bool)  # column-major: 0 1 0 | 1 1 0
    assert siim_rle_encode(m) == "1 1 1 2"
    assert (siim_rle_decode("1 1 1 2", 3, 2) == m).all()
    assert siim_rle_encode(np.zeros((4, 5), bool)) == "-1"
    rng = np.random.default_rng(0)
    for h, w in ((7, 5), (32, 48), (1, 9)):
        for p in (0.05, 0.5, 0.95):
            mask = rng.random((h, w)) < p
            mask[-1, -1] = True  # a run that reaches the last pixel
            code = siim_rle_encode(mask)
            assert (siim_rle_decode(code, h, w) == mask).all()
            assert (competition_rle2mask(code, w, h) == mask).all()  # h == w not needed: the code is transposed
            ys, xs = np.nonzero(mask)
            assert rle_box(code, h, w) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_reader_counts_equal_the_written_tables(tree: Path) -> None:
    import pydicom

    m = load_source("siim", str(tree))
    table = pd.read_csv(tree / "train-rle.csv", dtype=str)
    assert " EncodedPixels" in table.columns  # the competition's header, leading space
    pos = table[table[" EncodedPixels"].str.strip() != "-1"]
    assert len(m.frame) == table["ImageId"].nunique() == N
    assert m.frame["Pneumothorax"].sum() == pos["ImageId"].nunique() > 0
    assert len(m.boxes) == len(pos) > pos["ImageId"].nunique()  # several rows for some images
    files = sorted(tree.rglob("*.dcm"))
    heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert m.frame["patient"].nunique() == len({h.PatientID for h in heads})
    assert sorted(m.frame["sex"]) == sorted(h.PatientSex for h in heads)
    assert sorted(m.frame["view"]) == sorted(h.ViewPosition for h in heads)
    assert m.frame["split"].value_counts().sum() == N and set(m.frame["split"]) == {"train", "val", "test"}
    per = m.frame.groupby("split")["patient"].apply(set)
    assert not (per["train"] & per["test"]) and not (per["val"] & per["test"])


def test_decoded_masks_land_on_the_drawn_pneumothorax(tree: Path) -> None:
    m = load_source("siim", str(tree))
    masks = read_masks(tree / "train-rle.csv", list(m.frame["image"]))  # what `cxrlab audit --masks` reads
    positives = m.frame[m.frame["Pneumothorax"] == 1]
    assert len(masks) == len(positives)
    for image in positives["image"]:
        index = int(Path(image).stem.split(".")[-2])
        assert Path(image).stem == image_id(index, SEED)
        pixels, drawn, _ = render_siim(index, SIZE, SEED, FRACTION)
        got = masks.get(image, "Pneumothorax")
        assert got is not None and got.shape == (SIZE, SIZE)
        iou = (got & drawn).sum() / (got | drawn).sum()
        assert iou >= 0.99
        wrong = got.T  # numpy's row-major reading of the code: another region
        assert (wrong & drawn).sum() / (wrong | drawn).sum() < 0.9
        x, y, w, h = (int(v) for v in rle_box(siim_rle_encode(got), SIZE, SIZE))
        box = np.zeros_like(got)
        box[y:y + h, x:x + w] = True
        assert pixels[got].mean() < pixels[box & ~got].mean()  # the region is the dark rim that was drawn


def _copy(tree: Path, tmp: Path) -> Path:
    out = tmp / "copy"
    shutil.copytree(tree, out)
    return out


def test_bad_input_is_one_line_naming_file_and_row(tree: Path, tmp_path: Path) -> None:
    root = _copy(tree, tmp_path)
    csv = root / "train-rle.csv"
    lines = csv.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if not line.endswith(",-1") and i > 0)
    uid = lines[k].split(",")[0]
    lines[k] = f"{uid},{SIZE * SIZE - 3} 10"  # runs past the 64x64 image
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(CxrlabError, match=rf"train-rle.csv:{k + 1} \({uid}\).*does not fit the 64x64 image") as e:
        load_source("siim", str(root))
    assert "\n" not in str(e.value)
    with pytest.raises(CxrlabError, match=rf"train-rle.csv:{k + 1}"):
        siim_masks(csv)
    lines[k] = f"{uid}, "  # a blank code: neither a mask nor -1 (was a ValueError traceback)
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(CxrlabError, match=rf"train-rle.csv:{k + 1} \({uid}\): EncodedPixels is empty"):
        load_source("siim", str(root))
    csv.write_text("ImageId,Pixels\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(CxrlabError, match=r"train-rle.csv: missing columns \['EncodedPixels'\]"):
        load_source("siim", str(root))
    csv.write_text("ImageId, EncodedPixels\n1.2.3.nothere,-1\n")
    with pytest.raises(CxrlabError, match=r"train-rle.csv:2: image 1.2.3.nothere has no DICOM file"):
        load_source("siim", str(root))
    csv.unlink()
    with pytest.raises(CxrlabError, match="no mask table found"):
        load_source("siim", str(root))


def test_cli_writes_a_siim_phantom(tmp_path: Path) -> None:
    r = run_cli("phantom", "--out", tmp_path / "p", "--kind", "siim", "--n", 6, "--size", 32, "--workers", 1)
    assert r.exit_code == 0, r.stdout
    assert "data.source=siim" in r.stdout
    assert len(load_source("siim", str(tmp_path / "p")).frame) == 6


@needs_real
def test_real_siim_dicom_reads_with_its_header(tmp_path: Path) -> None:
    uid = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819"
    src = REAL / "samples" / f"{uid}.dcm"
    if not src.is_file():
        pytest.skip(f"{src} not found")
    folder = tmp_path / "dicom-images-train" / "study" / "series"
    folder.mkdir(parents=True)
    shutil.copy(src, folder / src.name)
    mask = np.zeros((1024, 1024), bool)
    mask[100:300, 700:760] = True  # rows 100..299, columns 700..759
    (tmp_path / "train-rle.csv").write_text(f"ImageId, EncodedPixels\n{uid}, {siim_rle_encode(mask)}\n")
    m = load_source("siim", str(tmp_path))
    row = m.frame.iloc[0]
    assert (row["sex"], row["age"], row["view"], row["Pneumothorax"]) == ("M", 62.0, "PA", 1.0)
    assert row["patient"] == "16d7f894-55d7-4d95-8957-d18987f0e981"
    assert tuple(m.boxes.iloc[0][["x", "y", "w", "h"]]) == (700, 100, 60, 200)
    got = read_masks(tmp_path / "train-rle.csv", [row["image"]]).get(row["image"], "Pneumothorax")
    assert (got == mask).all()


def test_vocabulary_maps_the_label() -> None:
    from cxrlab.data.vocabulary import Vocabulary

    v = Vocabulary.load()
    assert v.canonical("siim", "Pneumothorax") == ("Pneumothorax", "exact")
    assert v.canonical("phantom-siim", "Pneumothorax") == ("Pneumothorax", "exact")
