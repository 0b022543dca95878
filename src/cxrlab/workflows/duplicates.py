"""The duplicate check of target images against the images a run trained on.

Why here (a workflow): it opens the run folder, rebuilds the run's manifest from its config and
decodes the training images through the run's own preprocessing record, so a target image and a
training image are compared as the model would see them (the same size, resize and CLAHE).  The
comparison itself is the leaf :func:`cxrlab.evaluate.duplicates.find_duplicates`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.duplicates import MAX_DISTANCE, find_duplicates
from cxrlab.evaluate.records import DuplicateResult
from cxrlab.run import RunFolder
from cxrlab.runio import atomic_write_json
from cxrlab.workflows.common import build_manifest, load_run_images, run_folder, run_split


def training_images(run: RunFolder, splits: Sequence[str] = ("train",), workers: int = 0) -> tuple[np.ndarray, list[str]]:
    """The run's images of ``splits`` (default: what it trained on) as model inputs, and their ids."""
    cfg = run.read_config()
    rec = run.read_model_record()
    manifest = build_manifest(cfg)
    ids: list[str] = []
    for split in splits:
        ids += list(run_split(run, cfg, manifest, split)["image"])
    return load_run_images(manifest, ids, rec, workers, desc="decode training images"), ids


def duplicates_against_run(run: str | Path | RunFolder, target_images: np.ndarray, target_ids: Sequence[str],
                           splits: Sequence[str] = ("train",), max_distance: float = MAX_DISTANCE,
                           out: str | Path | None = None, workers: int = 0) -> DuplicateResult:
    """Which target images copy (exactly or nearly) an image the run trained on.

    Args:
        run: the run folder.
        target_images: ``(M, S, S)`` uint8, loaded with the run's preprocessing
            (:func:`cxrlab.workflows.common.load_run_images` with the run's model record).
        target_ids: a name per target image (what each match reports).
        splits: the run's splits to check against (``("train", "val")`` to include validation).
        max_distance: the near-copy threshold (:data:`cxrlab.evaluate.duplicates.MAX_DISTANCE`).
        out: where to write the record as JSON (e.g. ``run.external_files(name)["duplicates"]``).

    Returns:
        The :class:`DuplicateResult`; ``result.leaked`` are the target ids to exclude on request.
    """
    run = run if isinstance(run, RunFolder) else run_folder(run)
    size = run.read_model_record().preprocess.size
    target_images = np.asarray(target_images)
    if target_images.ndim != 3 or target_images.shape[1:] != (size, size):
        raise CxrlabError(f"{run.path}: target images are {target_images.shape[1:]} but the run's model input is "
                          f"{size} x {size} px (load them with the run's preprocessing)")
    ref, ref_ids = training_images(run, splits, workers)
    result = find_duplicates(ref, ref_ids, target_images, target_ids, max_distance=max_distance)
    if out is not None:
        atomic_write_json(Path(out), result.to_dict())
    return result


def exclude(ids: Sequence[str], result: DuplicateResult) -> list[str]:
    """``ids`` without the images the check named as copies (order kept)."""
    leaked = set(result.leaked)
    return [i for i in ids if i not in leaked]
