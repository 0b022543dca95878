"""Progress bars for long work (rich), quiet when ``CXRLAB_QUIET=1``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def quiet() -> bool:
    return os.environ.get("CXRLAB_QUIET", "") not in ("", "0")


def make_progress(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        disable=disable or quiet(),
        transient=False,
    )


def progress(items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """Iterate ``items`` with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as bar:
        task = bar.add_task(desc, total=total, info="")
        for item in items:
            yield item
            bar.advance(task)


def say(message: str) -> None:
    """One status line for the user on stderr (e.g. "resuming at epoch 3 of 10"), unless quiet."""
    if not quiet():
        from rich.console import Console

        Console(stderr=True).print(message, highlight=False)
