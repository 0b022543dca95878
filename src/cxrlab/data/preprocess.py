"""The preprocessing contract: one owner of the pixels a model sees, and of box geometry.

Every path that feeds a model (the training cache, evaluation, predict,
explain, localize, ONNX, the server) turns a file into model input with
:func:`load_image`, and every path that maps boxes between the original
image and the model input uses :class:`Geometry`.  The settings travel with
the model: :meth:`Preprocess.to_record` is written into ``model.json`` and
:meth:`Preprocess.from_record` rebuilds them, as timm's ``pretrained_cfg``
travels with a timm model.  A run folder copied alone therefore predicts on
exactly the pixels it was trained on.

Order of operations (full precision until the final resize)::

    decode (read_gray) -> letterbox (pad to square, optional)
      -> CLAHE on 8 bits at full resolution (optional) -> area resize to S x S, uint8

Normalisation to the network's float input (``(x / 255 - mean) / std``,
channels expanded) is the last step, done on the batch by
:func:`cxrlab.data.transforms.to_float` with the ``mean``/``std`` stored here:
training, its validation and test predictions, predict (PyTorch and ONNX Runtime),
explain and the server all read them from this record (:func:`normalization`
turns the config's ``data.normalize`` into them).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxrlab.data.io import DEFAULT_MAX_PIXELS, read_gray, to_uint8_resized
from cxrlab.data.transforms import GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, Norm
from cxrlab.data.workers import worker_pool
from cxrlab.errors import CxrlabError
from cxrlab.progress import progress

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # x, y, w, h

#: Version of the record written to model.json (bump when the meaning of a field changes).
#: 2: ``mean``/``std`` may be per-channel lists (``data.normalize``); 1 had one number each.
RECORD_VERSION = 2

#: ``data.normalize`` by name (or ``[mean, std]``, each a number or one per channel).
NORMALIZATIONS = ("default", "imagenet")


def normalization(spec: str | list[Any] | tuple[Any, ...], in_chans: int) -> tuple[Norm, Norm]:
    """``(mean, std)`` of ``data.normalize`` for a model with ``in_chans`` input channels.

    ``default`` is grey ImageNet (0.449, 0.226) on every channel, what cxrlab always used;
    ``imagenet`` is the same for 1 channel and ImageNet's RGB triple for 3 (the statistics
    ImageNet-pretrained 3-channel weights were trained with); ``[mean, std]`` gives them
    directly, each one number or one per channel.

    Raises:
        CxrlabError: an unknown name, a wrong number of values, or a std that is not positive.
    """
    if isinstance(spec, str):
        if spec == "default" or (spec == "imagenet" and in_chans != 3):
            return GRAY_MEAN, GRAY_STD
        if spec == "imagenet":
            return IMAGENET_MEAN, IMAGENET_STD
        raise CxrlabError(f"data.normalize: {spec!r} is not one of {', '.join(NORMALIZATIONS)} or [mean, std]")
    if len(spec) != 2:
        raise CxrlabError(f"data.normalize: expected [mean, std], got {list(spec)}")
    mean, std = (_norm_value(v, in_chans, what) for v, what in zip(spec, ("mean", "std"), strict=True))
    if min(std if isinstance(std, tuple) else (std,)) <= 0:
        raise CxrlabError(f"data.normalize: std must be > 0, got {std}")
    return mean, std


def _norm_value(v: Any, in_chans: int, what: str) -> Norm:
    if isinstance(v, list | tuple):
        if len(v) == 1:
            return float(v[0])
        if len(v) != in_chans:
            raise CxrlabError(f"data.normalize: {len(v)} {what} values for a model with {in_chans} input "
                              "channel(s); give one number, or one per channel")
        return tuple(float(x) for x in v)
    return float(v)


@dataclass(frozen=True)
class Preprocess:
    """Everything that decides the model's input pixels."""

    size: int = 224
    resize: str = "squash"  # squash | letterbox
    clahe: bool = False
    clahe_clip: float = 2.0
    clahe_tiles: int = 8
    mean: Norm = GRAY_MEAN
    std: Norm = GRAY_STD
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Refuse images larger than this (decompression bombs, corrupt headers); not a pixel setting."""

    def __post_init__(self) -> None:
        for k in ("mean", "std"):  # JSON gives lists; per-channel values are tuples (hashable, frozen)
            v = getattr(self, k)
            if isinstance(v, list | tuple):
                object.__setattr__(self, k, float(v[0]) if len(v) == 1 else tuple(float(x) for x in v))
        if self.resize not in ("squash", "letterbox"):
            raise CxrlabError(f"preprocess: resize must be squash or letterbox, got {self.resize!r}")
        if self.size < 8:
            raise CxrlabError(f"preprocess: size must be >= 8, got {self.size}")

    def key(self) -> dict[str, Any]:
        """What changes cached pixels (the cache folder's hash input; unchanged since cache v1)."""
        return {"size": self.size, "resize": self.resize, "clahe": self.clahe,
                "clahe_clip": self.clahe_clip if self.clahe else None,
                "clahe_tiles": self.clahe_tiles if self.clahe else None}

    def to_record(self) -> dict[str, Any]:
        """The block stored as ``model.json["preprocess"]``."""
        rec = asdict(self)
        rec.pop("max_pixels")
        return {"version": RECORD_VERSION, **rec, "interpolation": "area", "order":
                "decode > letterbox > clahe > resize > uint8 > (x/255 - mean)/std"}

    @classmethod
    def from_record(cls, rec: dict[str, Any], norm_block: dict[str, Any] | None = None) -> Preprocess:
        """Rebuild from ``model.json["preprocess"]``; a record without ``mean``/``std`` takes them from
        the file's ``normalization`` block, else the defaults every such run was trained with."""
        names = {f.name for f in fields(cls)}
        norm = {k: v for k, v in (norm_block or {}).items() if k in ("mean", "std") and v is not None}
        return cls(**{**norm, **{k: v for k, v in rec.items() if k in names}})


def preprocess_of_model_record(info: dict[str, Any], origin: str = "model.json") -> Preprocess:
    """The contract of a saved model; older records (no ``preprocess`` block) get the old behaviour.

    Runs written before the contract existed were always evaluated with a plain
    squash resize and no CLAHE at inference; that is what they keep, with a
    warning, since their training settings are not recorded in ``model.json``.
    """
    rec = info.get("preprocess")
    norm = info.get("normalization") or {}
    if rec is not None:
        return Preprocess.from_record(rec, norm)
    log.warning("%s has no preprocessing record (a model record from before format 1): assuming a squash "
                "resize to %s px without CLAHE; if the run was trained with CLAHE or letterbox its "
                "predictions here will differ from training", origin, info["input_size"])
    return Preprocess(size=int(info["input_size"]), mean=norm.get("mean", GRAY_MEAN), std=norm.get("std", GRAY_STD))


def letterbox(img: np.ndarray) -> np.ndarray:
    """Pad to a square with the image's minimum value, centred (keeps the aspect ratio)."""
    h, w = img.shape
    s = max(h, w)
    out = np.full((s, s), img.min(), dtype=img.dtype)
    y0, x0 = (s - h) // 2, (s - w) // 2
    out[y0:y0 + h, x0:x0 + w] = img
    return out


def apply_clahe(img_u8: np.ndarray, clip: float, tiles: int) -> np.ndarray:
    return cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles, tiles)).apply(img_u8)


def full_range_u8(img: np.ndarray) -> np.ndarray:
    """Min-max scale to uint8 at full resolution (only where CLAHE needs 8 bits)."""
    if img.dtype == np.uint8:
        return img
    f = img.astype(np.float32)
    lo, hi = float(f.min()), float(f.max())
    return np.zeros(f.shape, np.uint8) if hi <= lo else np.round((f - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def preprocess(img: np.ndarray, p: Preprocess) -> np.ndarray:
    """Full-precision decoded image -> (S, S) uint8, the model's input before normalisation."""
    if p.resize == "letterbox":
        img = letterbox(img)
    if p.clahe:
        img = apply_clahe(full_range_u8(img), p.clahe_clip, p.clahe_tiles)
    return to_uint8_resized(img, p.size)


def load_image(path: str | Path, p: Preprocess) -> np.ndarray:
    """Decode one file (PNG/JPEG/DICOM, judged by content) and preprocess it."""
    return preprocess(read_gray(path, max_pixels=p.max_pixels), p)


def _load_job(args: tuple[str, Preprocess]) -> np.ndarray:
    return load_image(*args)


def load_images(paths: list[Path], p: Preprocess, workers: int = 0, desc: str = "decode") -> np.ndarray:
    """:func:`load_image` for many files into one (N, S, S) uint8 array; errors name the file."""
    out = np.empty((len(paths), p.size, p.size), dtype=np.uint8)
    jobs = [(str(x), p) for x in paths]
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(paths) >= 256:
        with worker_pool(workers) as pool:
            for i, img in enumerate(progress(pool.map(_load_job, jobs, chunksize=64), total=len(jobs), desc=desc)):
                out[i] = img
    else:
        for i, job in enumerate(progress(jobs, desc=desc)):
            out[i] = _load_job(job)
    return out


@dataclass(frozen=True)
class Geometry:
    """Box mapping between an original image of ``width`` x ``height`` and the model input.

    Squash scales x and y separately; letterbox pads the short side (centred,
    integer padding as :func:`letterbox` does) and scales both axes alike.
    """

    width: int
    height: int
    p: Preprocess

    def _affine(self) -> tuple[float, float, float, float]:
        """(kx, ky, x0, y0): original = model * k - offset, model = (original + offset) / k."""
        s = self.p.size
        if self.p.resize == "letterbox":
            side = max(self.width, self.height)
            return side / s, side / s, float((side - self.width) // 2), float((side - self.height) // 2)
        return self.width / s, self.height / s, 0.0, 0.0

    def to_model(self, b: Box) -> Box:
        kx, ky, x0, y0 = self._affine()
        return ((b[0] + x0) / kx, (b[1] + y0) / ky, b[2] / kx, b[3] / ky)

    def to_original(self, b: Box) -> Box:
        kx, ky, x0, y0 = self._affine()
        return (b[0] * kx - x0, b[1] * ky - y0, b[2] * kx, b[3] * ky)

    def image_in_model(self) -> Box:
        """Where the original image lies in model coordinates (all of it for squash)."""
        return self.to_model((0.0, 0.0, float(self.width), float(self.height)))

    def mask_to_model(self, mask: np.ndarray, where: str = "mask") -> np.ndarray:
        """An original-pixel mask -> bool (S, S) mask over the model input, mapped as boxes are.

        Letterbox pads the mask as the image (background), then both resize with area
        averaging; a model pixel is in the mask when at least half of it is covered (a
        mask smaller than that keeps its best-covered pixel, so a tiny lesion never vanishes).
        A mask of another size than the image (CheXmask at 1024 px for a 3000 px image) is
        first resized to the image; one of another aspect ratio cannot be the image's and
        is refused.

        Raises:
            CxrlabError: a mask that is not 2-D, or whose aspect ratio is not the image's.
        """
        m = np.asarray(mask)
        if m.ndim != 2 or min(m.shape) == 0:
            raise CxrlabError(f"{where}: a mask must be a 2-D array, got shape {m.shape}")
        f = m.astype(np.float32)
        h, w = m.shape
        if (h, w) != (self.height, self.width):
            if abs((w / h) / (self.width / self.height) - 1.0) > 0.02:
                raise CxrlabError(f"{where}: the mask is {w}x{h} px, its image {self.width}x{self.height}: another "
                                  "aspect ratio, so it is not this image's mask (masks cover the whole image)")
            shrink = w >= self.width and h >= self.height
            f = cv2.resize(f, (self.width, self.height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if self.p.resize == "letterbox":
            side = max(self.width, self.height)
            padded = np.zeros((side, side), np.float32)
            y0, x0 = (side - self.height) // 2, (side - self.width) // 2
            padded[y0:y0 + self.height, x0:x0 + self.width] = f
            f = padded
        s = self.p.size
        cover = cv2.resize(f, (s, s), interpolation=cv2.INTER_AREA if min(f.shape) >= s else cv2.INTER_LINEAR)
        out = cover >= 0.5
        if not out.any() and cover.max() > 0:
            out = cover == cover.max()
        return out
