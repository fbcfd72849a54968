"""Helpers shared by the distributed tests: a DataLoader's round-robin, in plain Python."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def round_robin(parts: Iterable[Iterable[T]]) -> Iterator[T]:
    """Take one item from each part in turn, skipping exhausted ones.

    What ``torch.utils.data.DataLoader`` (``in_order=True``) does with the
    outputs of its workers.
    """
    iterators = [iter(p) for p in parts]
    while iterators:
        alive = []
        for it in iterators:
            try:
                item = next(it)
            except StopIteration:
                continue
            alive.append(it)
            yield item
        iterators = alive
