"""What happens after each epoch, as separate pieces: checkpoints, the metrics log, TensorBoard.

``fit`` calls ``on_epoch_end(epoch, row, state)`` on each callback of rank 0 in
order; a callback owns one output and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cxrlab.errors import CxrlabError
from cxrlab.run import RunFolder


class Callback:
    """Something done after each epoch; the extension point of the training loop.

    A subclass owns one output (written through the :class:`~cxrlab.run.RunFolder`) and nothing
    else; add it in ``train/loop.py`` ``_callbacks`` behind a config switch
    (``docs/extending.md``).  Callbacks run on rank 0 only, in order; ``row`` is the epoch's line
    of ``metrics.jsonl``.
    """

    def on_epoch_end(self, epoch: int, row: dict[str, Any], state: Callable[[], dict[str, Any]]) -> None:
        """``state()`` builds the resume state lazily (only checkpointing needs it)."""

    def close(self) -> None:
        """Release what the callback holds (a writer, a file); called once when training ends."""


class MetricsLog(Callback):
    """One line per epoch in ``metrics.jsonl``, before the state (a crash in between replays the epoch)."""

    def __init__(self, run: RunFolder):
        self.run = run

    def on_epoch_end(self, epoch: int, row: dict[str, Any], state: Callable[[], dict[str, Any]]) -> None:
        self.run.log_metrics(row)


class Checkpoints(Callback):
    """``best`` when the selection score improved, then ``last`` and the resume state."""

    def __init__(self, run: RunFolder, model: nn.Module):
        self.run, self.model = run, model

    def save_best(self) -> None:
        self.run.save_weights(self.model, "best")

    def on_epoch_end(self, epoch: int, row: dict[str, Any], state: Callable[[], dict[str, Any]]) -> None:
        self.run.save_weights(self.model, "last")
        self.run.save_state(state())


class TensorBoard(Callback):
    """The epoch metrics as TensorBoard scalars in ``RUN/tensorboard``."""

    KEYS = ("train_loss", "val_loss", "val_macro_auc", "lr", "img_per_s")

    def __init__(self, run: RunFolder):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CxrlabError("train.tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.board = SummaryWriter(log_dir=str(run.path / "tensorboard"))

    def on_epoch_end(self, epoch: int, row: dict[str, Any], state: Callable[[], dict[str, Any]]) -> None:
        for key in (*self.KEYS, row["selection"]):
            if isinstance(row.get(key), int | float):
                self.board.add_scalar(key, row[key], epoch)
        for lab, v in row["val_auc"].items():
            self.board.add_scalar(f"val_auc/{lab}", v, epoch)
        self.board.flush()

    def close(self) -> None:
        self.board.close()
