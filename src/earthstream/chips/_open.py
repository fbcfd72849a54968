"""``stream_chips``: chips of STAC items or COGs on one target grid, checked and planned."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .._units import parse_bytes
from .._validate import (
    MAX_SEED,
    Shuffle,
    check_choice,
    check_flag,
    check_names,
    check_numbers,
    check_whole,
)
from ..errors import ConfigError
from ..geo._grid import GridSpec
from ..sampling import (
    EDGES,
    Edges,
    OrderSpec,
    Remainder,
    WindowSubset,
    as_subset,
    build_window_grid,
    normalize_shuffle,
)
from ._empty import touch_mask
from ._labels import LabelSpec, label_values
from ._plan import GROUP_BY, TIME_MODES, GroupBy, TimeMode, build_plan
from ._stream import ChipStream

if TYPE_CHECKING:
    from ..vector._source import VectorSource

__all__ = ["stream_chips"]


def _pixels(value: Any, name: str) -> tuple[int, int]:
    """A size or step in pixels: one whole number, or ``(rows, columns)``."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ConfigError(f"{name}={value!r} must be one number of pixels or (rows, columns).")
        return check_whole(value[0], name, minimum=1), check_whole(value[1], name, minimum=1)
    n = check_whole(value, name, minimum=1)
    return n, n


def stream_chips(
    sources: Any,
    *,
    chip_size: int | tuple[int, int] = 256,
    stride: int | tuple[int, int] | None = None,
    assets: Sequence[str] | None = None,
    bands: Sequence[str | int] | None = None,
    grid: GridSpec | str | None = None,
    crs: Any = None,
    resolution: float | Sequence[float] | None = None,
    bounds: Sequence[float] | None = None,
    bounds_crs: Any = None,
    resampling: str | Mapping[str, str] = "nearest",
    time: TimeMode = "mosaic",
    group_by: GroupBy = "datetime",
    overview: str | int | None = "auto",
    labels: VectorSource | None = None,
    label_name: str = "label",
    all_touched: bool = False,
    label_fill: int = 0,
    label_dtype: str = "uint8",
    label_ignore: int | None = None,
    projection: Mapping[str, Any] | None = None,
    missing_projection: Literal["error", "read"] = "error",
    edges: Edges = "drop",
    batch_size: int = 16,
    shuffle: Shuffle = "chunks",
    shuffle_block: int = 4,
    shuffle_buffer: int = 4,
    seed: int = 0,
    drop_last: bool = False,
    prefetch: int = 2,
    num_threads: int | None = None,
    apply_scale: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    remainder: Remainder = "pad",
    windows: Any = None,
    samples_per_epoch: int | None = None,
    replacement: bool = False,
    skip_empty: bool = False,
    memory_limit: int | str = "1GB",
    storage_options: Mapping[str, Any] | None = None,
) -> ChipStream:
    """Stream chips from STAC items or COGs on one target grid, with optional label masks.

    Parameters
    ----------
    sources
        STAC items (a catalog/collection/ItemCollection/stac-geoparquet path or URL,
        pystac items, an ``ItemSearch``, item dicts), or COGs (paths/URLs or
        :class:`~earthstream.COGSource`).
    chip_size, stride
        Chip height/width in target pixels; step between chips (default: side by side).
    assets, bands
        STAC assets to read (default: the GeoTIFF data assets of the first item),
        or bands of the COGs (names or 1-based indexes).
    grid
        The target grid: a :class:`~earthstream.geo.GridSpec`, ``"first"`` (the
        first source's grid), or ``None`` to build it from ``crs``,
        ``resolution`` (CRS units) and ``bounds`` (in ``bounds_crs``, default
        ``crs``; default bounds: all sources).  ``crs`` defaults to the first
        source's, and with it ``resolution``.
    resampling
        One method, or ``{channel: method, "default": method}``.
    time
        ``"mosaic"``: overlapping scenes mosaicked in the given order, first valid
        pixel wins.  ``"stack"``: one time slot per distinct datetime (or
        ``group_by="day"``), scenes of a slot mosaicked.
    overview
        ``"auto"`` reads the overview matching the target resolution; ``None``
        always full resolution.
    labels
        A :func:`~earthstream.open_vector` source burned per chip into
        ``batch[label_name]`` (``all_touched``, ``label_fill``: the background,
        ``label_dtype``).
    label_ignore
        The label of pixels past the target grid's edge (``edges="pad"``), for a
        loss to ignore; must differ from ``label_fill``.  Default: the dtype's
        largest value (255 for uint8), -1 for signed dtypes.  Also in
        ``batch.attrs["label_ignore"]``.
    projection, missing_projection
        For STAC assets without projection metadata: the grid to assume
        (``{"crs", "transform", "shape"}``), or ``"read"`` the file headers.
    edges
        ``"drop"`` chips reaching past the target grid, or ``"pad"`` them: past
        the grid's edge nothing is read, the image is NaN, ``batch.mask`` False
        and labels ``label_ignore``.
    batch_size, shuffle, shuffle_block, shuffle_buffer, seed, drop_last
        As :class:`earthstream.Stream`; ``shuffle="chunks"`` mixes chips of
        ``shuffle_buffer`` blocks of ``shuffle_block`` x ``shuffle_block`` chips.
    prefetch, num_threads
        Batches read ahead; threads decoding tiles (as many again cut chips).
    apply_scale
        Values as ``raw * scale + offset`` (float32); else raw values in float32.
    rank, world_size, remainder
        As :class:`earthstream.Stream`: each rank of a distributed job serves its
        share of the epoch, every rank the same number of batches; the stream
        has ``state_dict`` / ``load_state_dict`` for mid-epoch resume.
    windows
        Which chips of the grid to keep, as :class:`earthstream.Stream`'s
        ``windows=`` (pure rules only): e.g. one split of a spatial block
        assignment, ``earthstream.sampling.BlockSplit(name, {"y": 1024, "x":
        1024}, assign_blocks(...), split, buffer=32)``, or a boolean mask over
        the chip grid.
    samples_per_epoch, replacement
        Random chips per epoch instead of every chip once, as ``Stream``'s
        (with ``stride=1`` any pixel offset can be drawn).
    skip_empty
        Leave out chips that touch no scene (planned from the scenes' outlines in
        the target CRS, so epochs, sharding and resume stay exact); counted in
        ``stream.excluded`` and ``report.excluded`` as ``"touch no scene"``.
    memory_limit
        Bytes for decoded tiles, batches in flight and GDAL's block cache (a
        sixteenth, at most 256 MB: ``GDAL_CACHEMAX`` is one setting per process,
        set to the largest share of the chip streams alive in it).
    storage_options
        Options for the object-store client of remote rasters (credentials,
        ``client_options``; never logged).

    Tiles are the engine's chunks: each raster's header is read once (one request
    for a COG), its tiles fetched through ``storage/`` and decoded once per
    epoch however many chips use them; chips on a raster's own pixel grid are
    copied, others warped with GDAL from the decoded window.
    """
    # -- every argument checked before anything is read (ConfigError) --
    ch, cw = _pixels(chip_size, "chip_size")
    sh, sw = (ch, cw) if stride is None else _pixels(stride, "stride")
    assets = check_names(assets, "assets")
    if bands is not None and (
        isinstance(bands, str)
        or not isinstance(bands, Sequence)
        or not all(isinstance(b, str | int) and not isinstance(b, bool) for b in bands)
    ):
        raise ConfigError(f"bands={bands!r} must be a list of band names or 1-based indexes.")
    if resolution is not None:
        check_numbers(resolution, "resolution", lengths=(2,), scalar=True, above=0)
    if bounds is not None:
        check_numbers(bounds, "bounds", lengths=(4,))
    elif bounds_crs is not None:
        raise ConfigError(
            f"bounds_crs={bounds_crs!r} is the CRS of bounds=, which was not given; pass "
            "bounds=(left, bottom, right, top) too, or leave bounds_crs out."
        )
    if not isinstance(resampling, str | Mapping):
        raise ConfigError(
            f"resampling={resampling!r} must be a method name or {{channel: method}}."
        )
    time = check_choice(time, "time", TIME_MODES)
    group_by = check_choice(group_by, "group_by", GROUP_BY)
    if not (overview is None or (isinstance(overview, str) and overview == "auto")):
        check_whole(overview, "overview", maximum=64)
    if not isinstance(label_name, str) or not label_name:
        raise ConfigError(f"label_name={label_name!r} must be a non-empty name.")
    all_touched = check_flag(all_touched, "all_touched")
    if projection is not None and not isinstance(projection, Mapping):
        raise ConfigError(
            f"projection={projection!r} must be a mapping with 'crs', 'transform' and 'shape'."
        )
    missing_projection = check_choice(missing_projection, "missing_projection", ("error", "read"))
    edges = check_choice(edges, "edges", EDGES)
    batch_size = check_whole(batch_size, "batch_size", minimum=1)
    normalize_shuffle(shuffle)
    shuffle_block = check_whole(shuffle_block, "shuffle_block", minimum=1)
    shuffle_buffer = check_whole(shuffle_buffer, "shuffle_buffer", minimum=1)
    seed = check_whole(seed, "seed", maximum=MAX_SEED)
    drop_last = check_flag(drop_last, "drop_last")
    prefetch = check_whole(prefetch, "prefetch", minimum=1)
    num_threads = check_whole(num_threads, "num_threads", minimum=1, maximum=1024, none=True)
    apply_scale = check_flag(apply_scale, "apply_scale")
    skip_empty = check_flag(skip_empty, "skip_empty")
    limit = parse_bytes(memory_limit)
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise ConfigError("storage_options must be a mapping of client options.")
    label_values(label_dtype, label_fill, label_ignore)

    plan = build_plan(
        sources,
        assets=assets,
        bands=bands,
        grid=grid,
        crs=crs,
        resolution=resolution,
        bounds=bounds,
        bounds_crs=bounds_crs,
        chip_size=(ch, cw),
        resampling=resampling,
        time=time,
        group_by=group_by,
        overview=overview,
        projection=projection,
        missing_projection=missing_projection,
        edges=edges,
    )
    sizes = {"y": plan.grid.height, "x": plan.grid.width}
    chips = build_window_grid(
        sizes,
        {"y": ch, "x": cw},
        {"y": sh, "x": sw},
        edges,
        {"y": sh * shuffle_block, "x": sw * shuffle_block},
    )
    subset = None if windows is None else as_subset(windows, chips)
    if skip_empty:
        touching = WindowSubset.from_mask(chips, touch_mask(plan, chips), "touch no scene")
        subset = touching if subset is None else subset.intersect(touching)
    order = OrderSpec(
        grid=chips,
        shuffle=normalize_shuffle(shuffle),
        seed=int(seed),
        batch_size=batch_size,
        drop_last=drop_last,
        shuffle_buffer=shuffle_buffer,
        subset=subset,
        samples=samples_per_epoch,
        replacement=bool(replacement),
    )
    label_spec = None
    if labels is not None:
        dtype_name, fill, ignore = label_values(label_dtype, label_fill, label_ignore)
        label_spec = LabelSpec(labels, label_name, all_touched, fill, dtype_name, ignore)
    return ChipStream(
        plan,
        order,
        labels=label_spec,
        prefetch=prefetch,
        num_threads=num_threads,
        apply_scale=apply_scale,
        rank=rank,
        world_size=world_size,
        remainder=remainder,
        memory_limit=limit,
        storage_options=storage_options,
    )
