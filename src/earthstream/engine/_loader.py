"""Loading chunks into slots: one stage locally, fetch then decode for object stores.

The engine reads from any number of inputs; each load goes to its variable's
input (``VarLayout.input``), whose capabilities were resolved once
(:class:`~earthstream.protocols.SourceCapabilities`).  Inputs read from local
files are read and decoded by the same task (reads are cheap, mostly memory
maps).  Inputs that fetch and decode in two steps (object stores:
:class:`~earthstream.protocols.SplitFetch`) answer in tens of milliseconds, so
there the work is split: many fetches in flight on an I/O pool (network waits
release the GIL), and decoding on a pool the size of the CPU.  Fetches of chunks
the source groups (inner chunks of one shard, tiles of one row) go together, so
the source can merge their byte ranges.  Every load ends in a future per chunk
key: ``True`` (decoded into its slot), ``False`` (not stored: the slot holds the
fill value) or an exception.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..protocols import ChunkedSource, SourceCapabilities, SplitFetch
from ._layout import VarLayout

__all__ = ["ChunkLoader"]


@dataclass
class _Item:
    key: int
    source: SplitFetch
    name: str
    index: tuple[int, ...]
    out: np.ndarray
    fill: Any
    future: Future[bool]


def _landed(chunk: np.ndarray | None, out: np.ndarray, fill: Any) -> bool:
    """Put a decoded chunk in its slot; a chunk not stored becomes fill values."""
    if chunk is None:
        out[...] = fill
        return False
    if chunk is not out:  # a source that ignores ``out``
        out[tuple(slice(0, n) for n in chunk.shape)] = chunk
    return True


def _store(
    source: ChunkedSource, name: str, index: tuple[int, ...], out: np.ndarray, fill: Any
) -> bool:
    """Read and decode one chunk into its slot."""
    return _landed(source.read_chunk(name, index, out), out, fill)


def _call_notify(notify: Callable[[int], None], key: int, _: Future[bool]) -> None:
    notify(key)


class ChunkLoader:
    """Runs chunk loads for one engine pass and reports each finished key."""

    def __init__(
        self,
        inputs: Sequence[ChunkedSource],
        capabilities: Sequence[SourceCapabilities],
        num_threads: int,
        notify: Callable[[int], None],
    ) -> None:
        self.inputs = list(inputs)
        self.capabilities = list(capabilities)
        self.notify = notify
        self.decode_pool = ThreadPoolExecutor(num_threads, thread_name_prefix="earthstream-decode")
        io = sum(c.io_concurrency for c in self.capabilities if c.split is not None)
        self.fetch_pool = (
            ThreadPoolExecutor(io, thread_name_prefix="earthstream-fetch") if io else None
        )
        self.futures: dict[int, Future[bool]] = {}
        self._direct: set[int] = set()  # keys whose future is the decode pool's own
        self._pending: list[_Item] = []

    def __len__(self) -> int:
        return len(self.futures)

    def __contains__(self, key: object) -> bool:
        return key in self.futures

    def submit(self, key: int, var: VarLayout, index: tuple[int, ...], out: np.ndarray) -> None:
        """Start loading chunk ``index`` of ``var`` into ``out`` (two-stage: at :meth:`flush`)."""
        notify = functools.partial(_call_notify, self.notify, key)
        split = self.capabilities[var.input].split
        if split is None or self.fetch_pool is None:  # one task, one future: cheap per chunk
            source = self.inputs[var.input]
            direct = self.decode_pool.submit(_store, source, var.name, index, out, var.fill)
            self.futures[key] = direct
            self._direct.add(key)
            direct.add_done_callback(notify)
            return
        future: Future[bool] = Future()
        future.set_running_or_notify_cancel()
        future.add_done_callback(notify)
        self.futures[key] = future
        self._pending.append(_Item(key, split, var.name, index, out, var.fill, future))

    def flush(self) -> None:
        """Send the fetches started since the last flush, grouped as each source asks."""
        if not self._pending or self.fetch_pool is None:
            return
        groups: dict[tuple[int, str, Hashable], list[_Item]] = {}
        for item in self._pending:
            group = item.source.fetch_group(item.name, item.index)
            groups.setdefault((id(item.source), item.name, group), []).append(item)
        self._pending = []
        for items in groups.values():
            self.fetch_pool.submit(self._fetch, items)

    def pop(self, key: int) -> Future[bool]:
        self._direct.discard(key)
        return self.futures.pop(key)

    # -- worker side --------------------------------------------------------------
    def _fetch(self, items: list[_Item]) -> None:
        first = items[0]
        try:
            raws = first.source.fetch_chunks(first.name, [i.index for i in items])
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
            chunk = item.source.decode_chunk(item.name, item.index, raw, item.out)
            item.future.set_result(_landed(chunk, item.out, item.fill))
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
