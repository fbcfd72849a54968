"""Planning a chip stream: scenes from STAC items or COGs, the target grid, time slots.

Everything here runs once, in the process that builds the stream, from
metadata only (STAC projection metadata, or one header per COG).  The result,
a :class:`ChipPlan`, is frozen and picklable; workers only read pixels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .._validate import check_choice
from ..errors import ConfigError, CRSError, VariableNotFoundError, WindowError
from ..geo._grid import (
    Bounds,
    GridSpec,
    crs_units,
    is_geographic,
    normalize_crs,
    reproject_bounds,
)
from ..geo._read import RasterBand, RasterRef, check_resampling
from ..sampling import Edges
from ..stac._assets import MISSING_PROJECTION, MissingProjection
from ..storage._secrets import redact

__all__ = [
    "GROUP_BY",
    "TIME_MODES",
    "ChipPlan",
    "GroupBy",
    "Scene",
    "TimeMode",
    "build_plan",
    "target_grid",
]

#: Scenes overlapping in time: mosaicked (first valid pixel), or one slot per date.
TimeMode = Literal["mosaic", "stack"]
TIME_MODES: tuple[TimeMode, ...] = ("mosaic", "stack")
#: What makes a time slot under ``time="stack"``.
GroupBy = Literal["datetime", "day"]
GROUP_BY: tuple[GroupBy, ...] = ("datetime", "day")


@dataclass(frozen=True)
class Scene:
    """One acquisition: an item's rasters (one per asset), or one COG."""

    id: str
    datetime: np.datetime64 | None
    rasters: tuple[RasterRef, ...]
    channels: tuple[tuple[int, ...], ...]  # for each raster, the channel of each of its bands
    footprint: Bounds  # in the target CRS


@dataclass(frozen=True)
class ChipPlan:
    """What a chip stream reads: scenes, channels, target grid, time slots, labels."""

    grid: GridSpec
    channels: tuple[str, ...]
    bands: tuple[RasterBand, ...]  # metadata of each channel (from its first raster)
    resampling: tuple[str, ...]  # per channel
    scenes: tuple[Scene, ...]
    slots: tuple[tuple[int, ...], ...]  # scene indexes of each time slot, in mosaic order
    slot_times: tuple[np.datetime64 | None, ...]
    time: str
    overview: str | int | None = "auto"

    @property
    def n_time(self) -> int:
        return len(self.slots)

    def footprints(self) -> np.ndarray:
        return np.array([s.footprint for s in self.scenes], dtype=np.float64).reshape(-1, 4)


# -- sources -> scenes ---------------------------------------------------------------------
def _is_cog_like(x: Any) -> bool:
    from ..sources._cog import COGSource

    if isinstance(x, COGSource):
        return True
    return isinstance(x, str | os.PathLike) and os.fspath(x).lower().endswith((".tif", ".tiff"))


def _cog_scenes(sources: Sequence[Any], bands: Sequence[str | int] | None) -> list[Scene]:
    from ..sources._cog import COGSource, open_cog

    scenes = []
    names: tuple[str, ...] | None = None
    for i, s in enumerate(sources):
        cog = s if isinstance(s, COGSource) else open_cog(s)
        if bands is not None:
            cog = cog.select(bands)
        if names is None:
            names = cog.band_names
        elif cog.band_names != names:
            raise VariableNotFoundError(
                f"COG {redact(cog.ref.href)!r} has bands {list(cog.band_names)}, the first has "
                f"{list(names)}; pass bands=[...] naming bands all files share."
            )
        ref = cog.ref
        scenes.append(
            Scene(
                id=ref.item_id or os.path.basename(ref.href) or str(i),
                datetime=ref.datetime,
                rasters=(ref,),
                channels=(tuple(range(len(ref.bands))),),
                footprint=ref.grid.bounds,
            )
        )
    return scenes


def _stac_scenes(
    items: Sequence[Mapping[str, Any]],
    assets: Sequence[str] | None,
    projection: Mapping[str, Any] | None,
    missing_projection: MissingProjection,
) -> list[Scene]:
    from ..stac._assets import asset_raster, raster_assets

    if not items:
        raise ConfigError("there are no STAC items; the catalog, file or search returned none.")
    if assets is None:
        assets = raster_assets(items[0])
        if not assets:
            raise ConfigError(
                f"item {items[0].get('id')!r} has no GeoTIFF data assets; pass assets=[...] "
                f"naming the ones to read (it has {', '.join(items[0].get('assets', {}))})."
            )
    known = set().union(*(set(i.get("assets", {})) for i in items))
    for key in assets:
        if key not in known:
            from .._names import suggest

            raise VariableNotFoundError(
                f"no item has an asset {key!r}.{suggest(key, sorted(known))} "
                f"Assets: {', '.join(sorted(known))}."
            )
    channel_of: dict[str, tuple[int, ...]] = {}
    n_channels = 0
    scenes = []
    for item in items:
        rasters, channels = [], []
        for key in assets:
            if key not in item.get("assets", {}):
                continue
            per_asset = projection.get(key) if projection and key in projection else projection
            if per_asset is not None and not {"crs", "shape"} & set(per_asset):
                per_asset = None
            ref = asset_raster(
                item, key, projection=per_asset, missing_projection=missing_projection
            )
            if key not in channel_of:
                channel_of[key] = tuple(range(n_channels, n_channels + len(ref.bands)))
                n_channels += len(ref.bands)
            if len(ref.bands) != len(channel_of[key]):
                raise ConfigError(
                    f"asset {key!r} has {len(ref.bands)} bands in item {item.get('id')!r} but "
                    f"{len(channel_of[key])} in an earlier item; stream assets with the same bands."
                )
            rasters.append(ref)
            channels.append(channel_of[key])
        if rasters:
            scenes.append(
                Scene(
                    id=str(item.get("id")),
                    datetime=rasters[0].datetime,
                    rasters=tuple(rasters),
                    channels=tuple(channels),
                    footprint=rasters[0].grid.bounds,
                )
            )
    # order channels as the assets were asked for
    return scenes


def _channels(scenes: Sequence[Scene]) -> tuple[tuple[str, ...], tuple[RasterBand, ...]]:
    names: dict[int, str] = {}
    bands: dict[int, RasterBand] = {}
    for scene in scenes:
        for ref, chans in zip(scene.rasters, scene.channels, strict=True):
            for band, c in zip(ref.bands, chans, strict=True):
                names.setdefault(c, band.name)
                bands.setdefault(c, band)
    order = sorted(names)
    return tuple(names[c] for c in order), tuple(bands[c] for c in order)


# -- the target grid -----------------------------------------------------------------------
def _check_units(
    crs: str, resolution: tuple[float, float] | None, bounds: Any, given_crs: bool
) -> None:
    units = crs_units(crs)
    if resolution is not None:
        res = max(resolution)
        if is_geographic(crs) and res >= 1:
            raise CRSError(
                f"resolution={res:g} is in {units}s for crs={crs} (about {res * 111:g} km per "
                f"pixel); pass degrees (e.g. resolution=0.0001 for ~11 m), or a projected crs "
                f"such as a UTM zone to give metres."
            )
        if not is_geographic(crs) and units in ("metre", "meter") and res < 1e-3:
            raise CRSError(
                f"resolution={res:g} looks like degrees, but crs={crs} is in metres; pass "
                f"metres (e.g. resolution=10) or crs='EPSG:4326' for degrees."
            )
    if bounds is not None and given_crs:
        left, bottom, right, top = bounds
        degree_like = all(abs(v) <= 180 for v in (left, right)) and all(
            abs(v) <= 90 for v in (bottom, top)
        )
        if not is_geographic(crs) and degree_like and (right - left) < 360:
            raise CRSError(
                f"bounds={tuple(bounds)} look like degrees, but crs={crs} is in {units}s; pass "
                f"bounds in {units}s, or bounds_crs='EPSG:4326' to give them in degrees."
            )
        if is_geographic(crs) and not degree_like:
            raise CRSError(
                f"bounds={tuple(bounds)} are outside longitude/latitude ranges, but crs={crs} is "
                "in degrees; pass degrees, or bounds_crs= naming the CRS they are in."
            )


def target_grid(
    scenes: Sequence[Scene] | None,
    *,
    grid: GridSpec | str | None,
    crs: Any,
    resolution: float | Sequence[float] | None,
    bounds: Sequence[float] | None,
    bounds_crs: Any,
) -> GridSpec:
    """The grid chips are cut from, from the user's choice or the first source."""
    if isinstance(grid, GridSpec):
        if crs is not None or resolution is not None or bounds is not None:
            raise ConfigError("pass grid= or crs=/resolution=/bounds=, not both.")
        return grid
    first = scenes[0].rasters[0].grid if scenes else None
    if grid == "first":
        if first is None:
            raise ConfigError("grid='first' needs at least one source.")
        if crs is not None or resolution is not None or bounds is not None:
            raise ConfigError(
                "grid='first' takes the first source's grid; drop crs/resolution/bounds."
            )
        return first
    if grid is not None:
        raise ConfigError(f"grid={grid!r} must be a GridSpec, 'first', or None.")
    if crs is None:
        if first is None:
            raise CRSError("crs is missing; pass crs='EPSG:...' (or grid=GridSpec(...)).")
        crs = first.crs
    target_crs = normalize_crs(crs)
    res: tuple[float, float] | None = None
    if resolution is not None:
        if isinstance(resolution, int | float | np.integer | np.floating):
            res = (float(resolution), float(resolution))
        else:
            res = (float(resolution[0]), float(resolution[1]))
    elif first is not None and first.crs == target_crs:
        res = first.res
    else:
        raise ConfigError(
            f"resolution is missing; pass resolution= in the units of crs={target_crs} "
            f"({crs_units(target_crs)}s per pixel), e.g. "
            f"{'0.0001' if is_geographic(target_crs) else '10'}."
        )
    _check_units(target_crs, res, bounds, bounds is not None and bounds_crs is None)
    if bounds is not None:
        box = tuple(float(v) for v in bounds)
        if bounds_crs is not None:
            box = reproject_bounds(box, bounds_crs, target_crs)
    else:
        if not scenes:
            raise ConfigError("bounds are missing and there are no sources to take them from.")
        fp = np.array(
            [reproject_bounds(s.footprint, s.rasters[0].grid.crs, target_crs) for s in scenes]
        )
        box = (fp[:, 0].min(), fp[:, 1].min(), fp[:, 2].max(), fp[:, 3].max())
    return GridSpec.from_bounds(target_crs, box, res)


def _reproject_footprints(scenes: list[Scene], crs: str) -> list[Scene]:
    out = []
    for s in scenes:
        boxes = [reproject_bounds(r.grid.bounds, r.grid.crs, crs) for r in s.rasters]
        fp = np.array(boxes)
        box = (
            float(fp[:, 0].min()),
            float(fp[:, 1].min()),
            float(fp[:, 2].max()),
            float(fp[:, 3].max()),
        )
        out.append(Scene(s.id, s.datetime, s.rasters, s.channels, box))
    return out


def _slots(
    scenes: Sequence[Scene], time: str, group_by: str
) -> tuple[tuple[tuple[int, ...], ...], tuple[np.datetime64 | None, ...]]:
    if time == "mosaic":
        return (tuple(range(len(scenes))),), (None,)
    keys: dict[Any, list[int]] = {}
    for i, s in enumerate(scenes):
        if s.datetime is None:
            raise ConfigError(
                f"scene {s.id!r} has no datetime, so time='stack' cannot place it; use "
                "time='mosaic', or give the items a datetime."
            )
        key = s.datetime if group_by == "datetime" else s.datetime.astype("datetime64[D]")
        keys.setdefault(key, []).append(i)
    order = sorted(keys)
    return (
        tuple(tuple(keys[k]) for k in order),
        tuple(np.datetime64(k, "ns") for k in order),
    )


def build_plan(
    sources: Any,
    *,
    assets: Sequence[str] | None = None,
    bands: Sequence[str | int] | None = None,
    grid: GridSpec | str | None = None,
    crs: Any = None,
    resolution: float | Sequence[float] | None = None,
    bounds: Sequence[float] | None = None,
    bounds_crs: Any = None,
    chip_size: tuple[int, int] = (256, 256),
    resampling: str | Mapping[str, str] = "nearest",
    time: TimeMode = "mosaic",
    group_by: GroupBy = "datetime",
    overview: str | int | None = "auto",
    projection: Mapping[str, Any] | None = None,
    missing_projection: MissingProjection = "error",
    edges: Edges = "drop",
) -> ChipPlan:
    """Resolve sources, channels and the target grid into a :class:`ChipPlan`."""
    time = check_choice(time, "time", TIME_MODES, meaning="'mosaic': first valid pixel")
    group_by = check_choice(group_by, "group_by", GROUP_BY)
    missing_projection = check_choice(missing_projection, "missing_projection", MISSING_PROJECTION)
    seq = list(sources) if isinstance(sources, list | tuple) else [sources]
    if seq and all(_is_cog_like(s) for s in seq):
        if assets is not None:
            raise ConfigError("assets= is for STAC items; for COG files pass bands=[...].")
        scenes = _cog_scenes(seq, bands)
    else:
        from ..stac._items import load_items

        if bands is not None:
            raise ConfigError("bands= is for COG files; for STAC items pass assets=[...].")
        scenes = _stac_scenes(load_items(sources), assets, projection, missing_projection)
    if not scenes:
        raise ConfigError("none of the sources has the requested assets or bands.")
    target = target_grid(
        scenes, grid=grid, crs=crs, resolution=resolution, bounds=bounds, bounds_crs=bounds_crs
    )
    ch, cw = chip_size
    if edges == "drop" and (ch > target.height or cw > target.width):
        xres, yres = target.res
        units = crs_units(target.crs)
        raise WindowError(
            f"a chip of {ch} x {cw} px at {xres:g} x {yres:g} {units}s covers "
            f"{cw * xres:g} x {ch * yres:g} {units}s, but the target grid is only "
            f"{target.height} x {target.width} px; use chip_size <= "
            f"{min(target.height, target.width)}, a finer resolution, larger bounds, or "
            "edges='pad'."
        )
    scenes = _reproject_footprints(scenes, target.crs)
    names, band_meta = _channels(scenes)
    if isinstance(resampling, str):
        methods = tuple(check_resampling(resampling) for _ in names)
    else:
        unknown = set(resampling) - set(names) - {"default"}
        if unknown:
            raise VariableNotFoundError(
                f"resampling names {sorted(unknown)}, which are not channels; channels: "
                f"{', '.join(names)} (use 'default' for the rest)."
            )
        default = resampling.get("default", "nearest")
        methods = tuple(check_resampling(resampling.get(n, default)) for n in names)
    slots, times = _slots(scenes, time, group_by)
    return ChipPlan(
        grid=target,
        channels=names,
        bands=band_meta,
        resampling=methods,
        scenes=tuple(scenes),
        slots=slots,
        slot_times=times,
        time=time,
        overview=overview,
    )
