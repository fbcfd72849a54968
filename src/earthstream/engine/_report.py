"""What one pass of the engine did: the per-epoch report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._units import format_bytes

__all__ = ["EpochReport"]

#: Fields that add up over the processes of one epoch.
_SUMMED = (
    "batches",
    "samples",
    "chunks_decoded",
    "chunks_missing",
    "chunk_uses",
    "bytes_decoded",
    "bytes_delivered",
    "evictions",
    "memory_limit",
    "cache_capacity",
    "peak_cache_bytes",
    "peak_held_bytes",
    "stall_s",
    "backpressure_s",
    "requests",
    "retries",
    "bytes_read",
    "samples_dropped",
)


@dataclass
class EpochReport:
    """What one pass of the engine did (one process, one shard of an epoch)."""

    epoch: int
    shard: int = 0
    num_shards: int = 1
    batches: int = 0
    samples: int = 0
    chunks_decoded: int = 0
    chunks_missing: int = 0
    chunks_fallback: int = 0  # of the chunks decoded, read through zarr-python (slow path)
    chunk_uses: int = 0
    bytes_decoded: int = 0
    bytes_delivered: int = 0
    evictions: int = 0
    decodes: Counter[tuple[str, tuple[int, ...]]] = field(default_factory=Counter)
    memory_limit: int = 0
    cache_capacity: int = 0
    peak_cache_bytes: int = 0
    peak_held_bytes: int = 0
    elapsed_s: float = 0.0
    first_batch_s: float = 0.0
    stall_s: float = 0.0  # scheduler waiting for chunks
    backpressure_s: float = 0.0  # scheduler waiting for the consumer
    requests: int = 0  # storage requests (attempts), this pass
    retries: int = 0  # of which retries
    bytes_read: int = 0  # bytes received from storage
    failures: dict[str, int] = field(default_factory=dict)  # failed attempts by kind
    corrupt_chunks: list[str] = field(default_factory=list)  # skipped (corrupt="skip")
    samples_dropped: int = 0  # samples dropped for reading a corrupt chunk
    #: What the stream kind counts besides (chips: rasters read, warped, skipped ...).
    counts: Counter[str] = field(default_factory=Counter)
    #: Samples of the grid left out of every epoch, by reason (the same for every pass).
    excluded: dict[str, int] = field(default_factory=dict)
    finished: bool = False

    @classmethod
    def merge(
        cls, reports: Sequence[EpochReport], *, shard: int = 0, num_shards: int = 1
    ) -> EpochReport:
        """One report for several processes' passes of an epoch (the DataLoader workers
        of rank ``shard`` of ``num_shards``).

        Counts, bytes, times waited, requests and failures add up; memory adds up
        too (each process has its own ``memory_limit``); corrupt chunks are listed
        in order of the reports; ``elapsed_s`` is the longest pass.

        >>> a, b = EpochReport(epoch=1, batches=2, samples=8), EpochReport(epoch=1, batches=1)
        >>> merged = EpochReport.merge([a, b])
        >>> merged.batches, merged.samples, merged.epoch
        (3, 8, 1)
        """
        if not reports:
            raise ValueError("no reports to merge")
        merged = cls(epoch=reports[0].epoch, shard=shard, num_shards=num_shards)
        for name in _SUMMED:
            vars(merged)[name] = sum(vars(r)[name] for r in reports)
        for r in reports:
            merged.decodes.update(r.decodes)
            merged.counts.update(r.counts)
            merged.corrupt_chunks.extend(r.corrupt_chunks)
            for kind, n in r.failures.items():
                merged.failures[kind] = merged.failures.get(kind, 0) + n
        merged.excluded = dict(reports[0].excluded)
        merged.elapsed_s = max(r.elapsed_s for r in reports)
        started = [r.first_batch_s for r in reports if r.batches]
        merged.first_batch_s = min(started) if started else 0.0
        merged.finished = all(r.finished for r in reports)
        return merged

    @property
    def cache_hits(self) -> int:
        """Chunk uses served without a decode for them."""
        return self.chunk_uses - self.chunks_decoded - self.chunks_missing

    def summary(self) -> str:
        rate = self.samples / self.elapsed_s if self.elapsed_s else 0.0
        return (
            f"epoch {self.epoch} shard {self.shard}/{self.num_shards}: {self.batches} batches, "
            f"{self.samples} samples in {self.elapsed_s:.2f} s ({rate:,.0f} samples/s); "
            f"{self.chunks_decoded} chunks decoded ({format_bytes(self.bytes_decoded)}), "
            f"{self.cache_hits} cache hits, {self.evictions} evictions; peak memory "
            f"{format_bytes(self.peak_held_bytes)} of {format_bytes(self.memory_limit)}; "
            f"{self.requests} requests ({self.retries} retries, "
            f"{format_bytes(self.bytes_read)} read)"
            + (f"; failures {self.failures}" if self.failures else "")
            + (
                f"; {self.chunks_fallback} chunks read through zarr-python (codecs the fast "
                "path lacks)"
                if self.chunks_fallback
                else ""
            )
            + (
                "; " + ", ".join(f"{k} {v:,}" for k, v in self.counts.items())
                if self.counts
                else ""
            )
            + (
                "; excluded from the epoch: "
                + ", ".join(f"{k} {v:,}" for k, v in self.excluded.items())
                if any(self.excluded.values())
                else ""
            )
            + (
                f"; {len(self.corrupt_chunks)} corrupt chunks skipped, "
                f"{self.samples_dropped} samples dropped"
                if self.corrupt_chunks
                else ""
            )
        )
