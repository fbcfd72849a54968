"""Loading chunks into slots: one stage locally, fetch then decode for object stores.

Local files are read and decoded by the same task (reads are cheap, mostly
memory maps).  Object stores answer in tens of milliseconds, so there the
work is split: many fetches in flight on an I/O pool (network waits release
the GIL), and decoding on a pool the size of the CPU.  Fetches of inner chunks
of one shard are grouped, so the source can merge their byte ranges.
Every load ends in a future per chunk key: ``True`` (decoded into its slot),
``False`` (not stored: the slot holds the fill value) or an exception.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..sources import ChunkedSource

__all__ = ["ChunkLoader"]


@dataclass
class _Item:
    key: int
    name: str
    index: tuple[int, ...]
    out: np.ndarray
    fill: Any
    future: Future[bool]


def _store(
    source: ChunkedSource, name: str, index: tuple[int, ...], out: np.ndarray, fill: Any
) -> bool:
    """Read and decode one chunk into its slot; a chunk not stored becomes fill values."""
    chunk = source.read_chunk(name, index, out)
    if chunk is None:
        out[...] = fill
        return False
    if chunk is not out:  # a source that ignores ``out``
        out[tuple(slice(0, n) for n in chunk.shape)] = chunk
    return True


def _call_notify(notify: Callable[[int], None], key: int, _: Future[bool]) -> None:
    notify(key)


class ChunkLoader:
    """Runs chunk loads for one engine pass and reports each finished key."""

    def __init__(
        self,
        source: ChunkedSource,
        num_threads: int,
        io_concurrency: int,
        notify: Callable[[int], None],
    ) -> None:
        self.source = source
        self.notify = notify
        self.decode_pool = ThreadPoolExecutor(num_threads, thread_name_prefix="earthstream-decode")
        split = io_concurrency > 0 and hasattr(source, "fetch_chunks")
        self.fetch_pool = (
            ThreadPoolExecutor(io_concurrency, thread_name_prefix="earthstream-fetch")
            if split
            else None
        )
        self.futures: dict[int, Future[bool]] = {}
        self._direct: set[int] = set()  # keys whose future is the decode pool's own
        self._pending: list[_Item] = []
        self._group: Callable[[str, tuple[int, ...]], Hashable] = getattr(
            source, "fetch_group", lambda name, index: index
        )

    @property
    def two_stage(self) -> bool:
        return self.fetch_pool is not None

    def __len__(self) -> int:
        return len(self.futures)

    def __contains__(self, key: object) -> bool:
        return key in self.futures

    def submit(
        self, key: int, name: str, index: tuple[int, ...], out: np.ndarray, fill: Any
    ) -> None:
        """Start loading chunk ``index`` of ``name`` into ``out`` (two-stage: at :meth:`flush`)."""
        notify = functools.partial(_call_notify, self.notify, key)
        if self.fetch_pool is None:  # one task, one future: the per-chunk cost stays small
            direct = self.decode_pool.submit(_store, self.source, name, index, out, fill)
            self.futures[key] = direct
            self._direct.add(key)
            direct.add_done_callback(notify)
            return
        future: Future[bool] = Future()
        future.set_running_or_notify_cancel()
        future.add_done_callback(notify)
        self.futures[key] = future
        self._pending.append(_Item(key, name, index, out, fill, future))

    def flush(self) -> None:
        """Send the fetches started since the last flush, grouped by shard."""
        if not self._pending or self.fetch_pool is None:
            return
        groups: dict[tuple[str, Hashable], list[_Item]] = {}
        for item in self._pending:
            groups.setdefault((item.name, self._group(item.name, item.index)), []).append(item)
        self._pending = []
        for items in groups.values():
            self.fetch_pool.submit(self._fetch, items)

    def pop(self, key: int) -> Future[bool]:
        self._direct.discard(key)
        return self.futures.pop(key)

    # -- worker side --------------------------------------------------------------
    def _fetch(self, items: list[_Item]) -> None:
        try:
            raws = self.source.fetch_chunks(items[0].name, [i.index for i in items])  # type: ignore[attr-defined]
        except BaseException as exc:
            for item in items:
                item.future.set_exception(exc)
            return
        for item, raw in zip(items, raws, strict=True):
            if raw is None:
                item.out[...] = item.fill
                item.future.set_result(False)
                continue
            try:
                self.decode_pool.submit(self._decode, item, raw)
            except RuntimeError as exc:  # the pass is shutting down
                item.future.set_exception(exc)

    def _decode(self, item: _Item, raw: Any) -> None:
        try:
            chunk = self.source.decode_chunk(item.name, item.index, raw, item.out)  # type: ignore[attr-defined]
            if chunk is None:
                item.out[...] = item.fill
                item.future.set_result(False)
            else:
                if chunk is not item.out:
                    item.out[tuple(slice(0, n) for n in chunk.shape)] = chunk
                item.future.set_result(True)
        except BaseException as exc:
            item.future.set_exception(exc)

    def shutdown(self) -> None:
        for key, future in self.futures.items():
            if key in self._direct:  # the pool's own: cancelled if not started, else finishes
                future.cancel()
                continue
            with contextlib.suppress(Exception):
                if not future.done():
                    future.set_exception(RuntimeError("earthstream pass stopped"))
        if self.fetch_pool is not None:
            self.fetch_pool.shutdown(wait=True, cancel_futures=True)
        self.decode_pool.shutdown(wait=True, cancel_futures=True)
