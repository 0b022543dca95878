"""Best-checkpoint selection and early stopping, as a small pure state machine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BestTracker:
    """Tracks the best validation score; stops after ``patience`` epochs without a better one."""

    patience: int
    best: float = -np.inf
    best_epoch: int = 0

    def update(self, epoch: int, score: float) -> bool:
        """Record ``score`` of ``epoch``; True if it is a new best (NaN never is)."""
        if score > self.best:
            self.best, self.best_epoch = score, epoch
            return True
        return False

    def should_stop(self, next_epoch: int) -> bool:
        """Whether to stop before training ``next_epoch``."""
        return self.best_epoch > 0 and next_epoch - self.best_epoch > self.patience
