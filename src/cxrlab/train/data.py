"""A training split as arrays: uint8 images (in memory or rows of the cache), float targets, and the
preprocessing record that made the images (its ``mean``/``std`` turn them into the network input, the
same record ``model.json`` holds for predict)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from cxrlab.data.cache import RowView
from cxrlab.data.preprocess import Preprocess


@dataclass
class ArraySplit:
    images: np.ndarray | RowView  # uint8 (N, S, S): an array, or rows of the memory-mapped cache
    targets: torch.Tensor  # float32 (N, L); NaN = ignore
    redraw: Callable[[np.random.Generator], np.ndarray] | None = None
    """Per-epoch targets (random-flip policy); ``None`` keeps ``targets``."""
    pre: Preprocess = field(default_factory=Preprocess)
    """How the images were made and are normalised (the run's record: ``preprocess_of(cfg)``)."""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and targets of rows ``idx`` (read in row order: sequential memmap access)."""
        rows = np.sort(idx.numpy())
        return torch.from_numpy(np.ascontiguousarray(self.images[rows])), targets[torch.from_numpy(rows)]

    def numpy(self) -> np.ndarray:
        return self.images.numpy() if isinstance(self.images, RowView) else np.asarray(self.images)

    def epoch_targets(self, epoch_seed: int) -> torch.Tensor:
        if self.redraw is None:
            return self.targets
        return torch.from_numpy(self.redraw(np.random.default_rng(epoch_seed)))
