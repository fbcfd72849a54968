"""``StreamDataModule``: earthstream streams as a Lightning ``LightningDataModule``.

How it meets Lightning's loops:

* **Epochs.** Lightning calls ``set_epoch`` only on a loader's sampler, so each
  loader this module hands out carries a small sampler whose ``set_epoch`` sets
  the stream's (:meth:`earthstream.Stream.set_epoch`): every fit epoch follows
  the trainer's ``current_epoch``, before the loop iterates the loader.
* **Ranks.** In :meth:`StreamDataModule.setup` each stream takes its rank and
  world size from the trainer (``global_rank`` / ``world_size``), so under DDP
  each rank streams its part of every epoch, all ranks the same number of
  batches.
* **Resume.** The loaders have ``state_dict`` / ``load_state_dict``, which
  Lightning's fit loop saves in its checkpoints and restores before iterating.
  A loader with a length is never prefetched ahead by Lightning, so the state
  counts exactly the batches the model has trained on.
* **Devices.** Batches are moved to the trainer's device in the last stage of
  the loader (pinned memory and non-blocking copies for CUDA); Lightning's own
  ``batch_to_device`` then finds them there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import lightning as L
import torch

from .._sharding import ShardedStream
from .._validate import check_flag, check_whole
from ..delivery._loader import DeviceLoader
from ..delivery._torch import TorchStream
from ..delivery._torch_batch import TorchBatch
from ..errors import ConfigError

if TYPE_CHECKING:
    from .._stream import Stream

__all__ = ["Split", "StreamDataModule", "StreamLoader"]

#: The stages a data module serves.
Split = Literal["train", "val", "test", "predict"]
SPLITS: tuple[Split, ...] = ("train", "val", "test", "predict")

#: What a stage takes: a stream (``es.Stream``, ``MultiStream``, ``ChipStream``), a
#: ``TorchStream`` made with ``stream.to_torch(...)``, or (not train) several.
StageStreams: TypeAlias = "ShardedStream | TorchStream | Sequence[ShardedStream | TorchStream]"


class _TrainerEpochs:
    """What Lightning takes for a sampler: it calls ``set_epoch`` on it before each epoch
    (and before each evaluation, with the fit epoch)."""

    def __init__(self, dataset: TorchStream) -> None:
        self._dataset = dataset

    def set_epoch(self, epoch: int) -> None:
        self._dataset.set_epoch(epoch)


class StreamLoader:
    """A :class:`~earthstream.delivery.DeviceLoader` as Lightning expects a loader: sized,
    stateful, with a ``sampler`` whose ``set_epoch`` reaches the stream."""

    def __init__(self, loader: DeviceLoader) -> None:
        self.loader = loader
        self.sampler = _TrainerEpochs(loader.dataset)
        self.batch_sampler = None  # the stream batches (as a DataLoader with batch_size=None)

    # No ``dataset`` attribute: Lightning would warn that an IterableDataset's length may
    # be inaccurate with workers; this loader's length is exact on every rank.

    def __iter__(self) -> Iterator[TorchBatch]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> dict[str, Any]:
        """The stream's state after the batches handed out (see ``Stream.state_dict``)."""
        return self.loader.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loader.load_state_dict(state)

    def close(self) -> None:
        """Stop the loader's worker processes (see ``DeviceLoader.close``)."""
        self.loader.close()

    def __repr__(self) -> str:
        return f"<StreamLoader {self.loader!r}>"


class StreamDataModule(L.LightningDataModule):
    """Streams for Lightning's train, validation, test and predict loops.

    Parameters
    ----------
    train
        The training stream (an :class:`earthstream.Stream`, ``MultiStream`` or
        ``ChipStream``, or a :class:`~earthstream.delivery.TorchStream` made with
        ``stream.to_torch(...)``).
    val, test, predict
        The streams of those loops: one, or a list (Lightning then runs one
        loader per stream).  Each is its own object: iterating it never moves
        the training stream's epoch.
    num_workers
        DataLoader worker processes per loader (0: the engine's threads in the
        trainer's process, often the fastest on few cores).
    persistent_workers
        Keep the workers (and their decoded chunks) from one epoch to the next;
        default: when there are workers.  Epochs and resumed states reach them.
    loader_options
        Other ``DataLoader`` arguments (e.g. ``multiprocessing_context="spawn"``),
        see :meth:`earthstream.delivery.TorchStream.loader`.

    Notes
    -----
    Epochs follow the trainer (``set_epoch`` from Lightning's loops), each rank
    of a DDP job streams its part of every epoch (rank and world size from the
    trainer), and mid-epoch checkpoints resume with every window of the epoch
    exactly once.  Under DDP a rank with one batch fewer than the others repeats
    one, flagged in ``batch.padded`` (``remainder="pad"``): leave those samples
    out of losses and metrics.

    Examples
    --------
    >>> import earthstream as es
    >>> from earthstream.lightning import StreamDataModule
    >>> path = es.datasets.era5_like(tmp_path / "l.zarr", n_times=8, n_lat=16, n_lon=32)
    >>> dm = StreamDataModule.from_splits(
    ...     path, {"lat": 8, "lon": 8},
    ...     {"train": {"time": slice("2020-01-01", "2020-01-02T06")},
    ...      "val": {"time": slice("2020-01-02T12", None)}},
    ...     variables="t2m", batch_size=8,
    ... )
    >>> dm.setup("fit")
    >>> len(dm.train_dataloader()), len(dm.val_dataloader())
    (6, 2)
    >>> next(iter(dm.train_dataloader()))["t2m"].shape
    torch.Size([8, 8, 8])
    """

    def __init__(
        self,
        train: ShardedStream | TorchStream | None = None,
        val: StageStreams | None = None,
        test: StageStreams | None = None,
        predict: StageStreams | None = None,
        *,
        num_workers: int = 0,
        persistent_workers: bool | None = None,
        **loader_options: Any,
    ) -> None:
        super().__init__()
        self.num_workers = check_whole(num_workers, "num_workers")
        self.persistent_workers = (
            self.num_workers > 0
            if persistent_workers is None
            else check_flag(persistent_workers, "persistent_workers")
        )
        if self.persistent_workers and self.num_workers == 0:
            raise ConfigError(
                "StreamDataModule(persistent_workers=True) needs worker processes: pass "
                "num_workers >= 1 (without workers the engine in the trainer's process keeps "
                "its decoded chunks from one epoch to the next anyway)."
            )
        self.loader_options = dict(loader_options)
        if train is not None and not isinstance(train, ShardedStream | TorchStream):
            raise ConfigError(
                f"StreamDataModule(train={type(train).__name__}): the training stream is one "
                "es.Stream (or stream.to_torch(...)); combine inputs with es.MultiStream."
            )
        self._streams: dict[Split, list[ShardedStream | TorchStream]] = {
            split: _as_list(given, split)
            for split, given in zip(SPLITS, (train, val, test, predict), strict=True)
        }
        self._loaders: dict[Split, list[StreamLoader]] = {}

    @classmethod
    def from_splits(
        cls,
        source: Any,
        window: Mapping[str, int | None],
        splits: Mapping[Split, Mapping[str, Any] | None],
        *args: Any,
        num_workers: int = 0,
        persistent_workers: bool | None = None,
        loader_options: Mapping[str, Any] | None = None,
        **stream_options: Any,
    ) -> StreamDataModule:
        """One source, a stream per split, each over its selection (``sel=``).

        ``splits`` maps ``"train"``, ``"val"``, ``"test"``, ``"predict"`` to the
        split's ``sel`` (labels, as ``xarray.Dataset.sel``; ``None``: all of it).
        Other arguments go to every :class:`earthstream.Stream`; the evaluation
        splits are not shuffled unless ``shuffle`` is given.
        """
        from .._stream import Stream

        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise ConfigError(
                f"StreamDataModule.from_splits: unknown split(s) {sorted(unknown)}; the "
                f"splits are {list(SPLITS)}."
            )
        streams: dict[str, Stream] = {}
        for split, sel in splits.items():
            options = dict(stream_options)
            if split != "train":
                options.setdefault("shuffle", False)
            streams[split] = Stream(source, window, *args, sel=sel, **options)
        return cls(
            streams.get("train"),
            streams.get("val"),
            streams.get("test"),
            streams.get("predict"),
            num_workers=num_workers,
            persistent_workers=persistent_workers,
            **dict(loader_options or {}),
        )

    # -- Lightning hooks ----------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Place every stream on the trainer's rank (called by Lightning on each process)."""
        trainer = self.trainer
        if trainer is None:
            return
        rank, world_size = int(trainer.global_rank), int(trainer.world_size)
        for streams in self._streams.values():
            for s in streams:
                _stream_of(s)._join(rank, world_size, "the Lightning trainer")

    def train_dataloader(self) -> StreamLoader:
        loaders = self._loaders_of("train")
        if not loaders:
            raise ConfigError("StreamDataModule: no train stream was given.")
        return loaders[0]

    def val_dataloader(self) -> StreamLoader | list[StreamLoader]:
        return self._one_or_list("val")

    def test_dataloader(self) -> StreamLoader | list[StreamLoader]:
        return self._one_or_list("test")

    def predict_dataloader(self) -> StreamLoader | list[StreamLoader]:
        return self._one_or_list("predict")

    def teardown(self, stage: str) -> None:
        """Stop the worker processes of the stage's loaders (persistent ones included)."""
        by_stage: dict[str, tuple[Split, ...]] = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
        }
        splits = by_stage.get(stage, SPLITS)
        for split in splits:
            for loader in self._loaders.get(split, ()):
                loader.close()

    # -- loaders --------------------------------------------------------------------------
    def _device(self) -> torch.device:
        trainer = self.trainer
        if trainer is None:
            return torch.device("cpu")
        device: torch.device = trainer.strategy.root_device
        return device

    def _loaders_of(self, split: Split) -> list[StreamLoader]:
        if split not in self._loaders:
            self._loaders[split] = [self._loader(s) for s in self._streams[split]]
        return self._loaders[split]

    def _one_or_list(self, split: Split) -> StreamLoader | list[StreamLoader]:
        loaders = self._loaders_of(split)  # none given: [] (Lightning skips the loop)
        return loaders[0] if len(loaders) == 1 else loaders

    def _loader(self, given: ShardedStream | TorchStream) -> StreamLoader:
        ds = given if isinstance(given, TorchStream) else given.to_torch(device=self._device())
        options = dict(self.loader_options)
        if self.num_workers > 0:
            options["persistent_workers"] = self.persistent_workers
        return StreamLoader(ds.loader(num_workers=self.num_workers, **options))

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={len(v)}" for k, v in self._streams.items() if v)
        return f"<StreamDataModule {given}; num_workers={self.num_workers}>"


def _stream_of(given: ShardedStream | TorchStream) -> ShardedStream:
    return given.stream if isinstance(given, TorchStream) else given


def _as_list(given: Any, split: str) -> list[ShardedStream | TorchStream]:
    if given is None:
        return []
    items = list(given) if isinstance(given, list | tuple) else [given]
    for item in items:
        if not isinstance(item, ShardedStream | TorchStream):
            raise ConfigError(
                f"StreamDataModule({split}=...): got {type(item).__name__}; give an es.Stream "
                "(or MultiStream, ChipStream, stream.to_torch(...)), or a list of them."
            )
    return items
