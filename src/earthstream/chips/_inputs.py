"""The engine inputs of a chip stream: the scenes' rasters as COG tile sources.

Built once, where the stream is built, from the :class:`~earthstream.chips.ChipPlan`
and each raster's header (one request per file for a COG; files opened as
:func:`~earthstream.open_cog` sources keep theirs).  Every raster of a scene
that touches the target grid is read at one resolution level
(``overview="auto"``: the coarsest overview whose pixels are not larger than
the chip pixels anywhere over the raster; ``None``: full resolution; an int:
that overview).  Rasters whose tiles are alike at their level (image shape,
tiling, band count and selection, dtype, nodata) are stacked into one
:class:`~earthstream.sources.TiffSource` along a ``file`` dim: one engine
variable whose slots every file of the group shares, so the cache follows the
chips wherever they go in a mosaic.

Everything here is frozen and pickles to DataLoader workers with the headers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, DimensionError
from ..geo._boxes import (
    RasterLevel,
    chip_bounds,
    chip_transforms,
    kernel_radius,
    raster_windows,
    transform_bounds,
)
from ..geo._grid import GridSpec
from ..geo._read import RasterBand, pick_overview
from ..sampling import WindowGrid
from ..sources._tiff import HEADER_BYTES
from ..sources._tiff_file import TiffFile, open_file
from ..sources._tiff_source import TiffSource
from ..storage import parse_location
from ..storage._secrets import redact
from ._plan import ChipPlan

__all__ = ["ChipInputs", "RasterUse", "build_inputs", "lattice_range", "pixel_boxes"]

#: Chips per axis sampled over each raster to pick its level and size its frames.
_SAMPLE = 32
#: Frames of warped windows: the largest sampled window times this, plus a few pixels.
_FRAME_SLACK = 1.25
#: Buckets per axis of the chip lattice when counting how many rasters a chip can touch.
_BUCKETS = 2048


@dataclass(frozen=True)
class RasterUse:
    """One raster of one scene, as the chip stream reads it.

    ``slot``/``rank``/``index``: the time slot, the scene's place in it (mosaic
    order: first valid pixel wins) and the raster's place in the scene.
    ``channels``: the output channel of each band; ``nodata``: what marks a band's
    pixel invalid (the band's nodata, else the file's); ``methods``: resampling
    per band.  ``level``: the grids read.  ``input``/``file``: the engine input
    (a stacked :class:`~earthstream.sources.TiffSource`) and the file's position
    in it.
    """

    scene: int
    index: int
    slot: int
    rank: int
    href: str
    channels: tuple[int, ...]
    bands: tuple[RasterBand, ...]
    nodata: tuple[float | None, ...]
    methods: tuple[str, ...]
    radius: int
    level: RasterLevel
    input: int
    file: int

    @property
    def scales(self) -> tuple[float, ...]:
        return tuple(b.scale for b in self.bands)

    @property
    def offsets(self) -> tuple[float, ...]:
        return tuple(b.offset for b in self.bands)


@dataclass(frozen=True)
class ChipInputs:
    """The engine's inputs for a chip plan and how each scene raster maps onto them.

    ``uses``: every raster read, in mosaic order (slot, rank, index).  ``frames``:
    per input, the box one raster read holds at most ``(1, bands, height, width)``
    (the chip for aligned reads; warped windows include the kernel's margin).
    ``rows_per_chip``: per input, the most rasters of it one chip can read.
    ``unused_scenes``: scenes whose footprint misses the target grid (not opened).
    """

    sources: tuple[TiffSource, ...]
    uses: tuple[RasterUse, ...]
    frames: tuple[tuple[int, int, int, int], ...]
    rows_per_chip: tuple[int, ...]
    unused_scenes: int = 0

    def levels(self) -> dict[str, int]:
        """Rasters per level read (``"full"``, ``"overview 0"`` ...)."""
        out: dict[str, int] = {}
        for u in self.uses:
            key = "full" if u.level.level is None else f"overview {u.level.level}"
            out[key] = out.get(key, 0) + 1
        return out


def pixel_boxes(grid: GridSpec, bounds: np.ndarray) -> np.ndarray:
    """``(n, 4)`` ``(row0, col0, row1, col1)``: the fractional pixel box of world ``bounds``
    on ``grid`` (any affine: the extremes of the four corners).

    >>> g = GridSpec.from_bounds("EPSG:32633", (0, 0, 100, 100), 10)
    >>> pixel_boxes(g, np.array([[20., 30., 50., 60.]])).tolist()
    [[4.0, 2.0, 7.0, 5.0]]
    """
    inverse = ~grid.affine
    b = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    xs = b[:, [0, 2, 0, 2]]
    ys = b[:, [1, 1, 3, 3]]
    ia, ib, ic, id_, ie, if_ = inverse.a, inverse.b, inverse.c, inverse.d, inverse.e, inverse.f
    cols = ia * xs + ib * ys + ic
    rows = id_ * xs + ie * ys + if_
    return np.column_stack([rows.min(1), cols.min(1), rows.max(1), cols.max(1)])


def lattice_range(starts: np.ndarray, length: int, lo: float, hi: float) -> tuple[int, int]:
    """Positions ``[a, b)`` of lattice ``starts`` whose windows ``[s, s + length)`` overlap
    ``(lo, hi)`` (open: sharing an edge is not overlapping)."""
    a = int(np.searchsorted(starts, lo - length, side="right"))
    b = int(np.searchsorted(starts, hi, side="left"))
    return a, max(a, b)


def _open_files(
    hrefs: Sequence[str], storage_options: Mapping[str, Any] | None, known: Mapping[str, TiffFile]
) -> dict[str, TiffFile]:
    todo = [h for h in dict.fromkeys(hrefs) if h not in known]
    found = dict(known)
    if not todo:
        return found
    remote = not parse_location(todo[0], storage_options).is_local
    if remote and len(todo) > 1:
        with ThreadPoolExecutor(min(16, len(todo))) as pool:
            files = list(pool.map(lambda h: open_file(h, storage_options, HEADER_BYTES), todo))
    else:
        files = [open_file(h, storage_options, HEADER_BYTES) for h in todo]
    found.update(zip(todo, files, strict=True))
    return found


def _factors(file: TiffFile) -> list[int]:
    main = file.header.main
    return [round(main.width / im.width) for im in file.header.overviews]


def _sample_chips(
    grid: WindowGrid, chip: tuple[int, int], shape: tuple[int, int], box: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Chips of the lattice over pixel ``box`` (up to ``_SAMPLE`` per axis, its ends
    included): starts and inside sizes."""
    out = []
    for axis, length, size, lo, hi in (
        (grid.axis("y"), chip[0], shape[0], box[0], box[2]),
        (grid.axis("x"), chip[1], shape[1], box[1], box[3]),
    ):
        starts = axis.starts()
        a, b = lattice_range(starts, length, lo, hi)
        if b <= a:
            return (np.zeros(0, np.int64),) * 4
        pick = np.unique(np.linspace(a, b - 1, min(_SAMPLE, b - a)).round().astype(np.int64))
        s = starts[pick]
        out.append((s, np.minimum(length, size - s)))
    (rows, heights), (cols, widths) = out
    r, c = np.meshgrid(np.arange(len(rows)), np.arange(len(cols)), indexing="ij")
    return rows[r.ravel()], cols[c.ravel()], heights[r.ravel()], widths[c.ravel()]


def _level(
    overview: str | int | None,
    file: TiffFile,
    href: str,
    scales: np.ndarray,
) -> int | None:
    factors = _factors(file)
    if overview is None:
        return None
    if isinstance(overview, int) and not isinstance(overview, bool):
        if not 0 <= overview < len(factors):
            raise ConfigError(
                f"overview={overview} but {redact(href)!r} has {len(factors)} overviews "
                f"(factors {factors}); use 0..{len(factors) - 1}, 'auto' or None."
            )
        return overview
    finite = scales[np.isfinite(scales)]
    if not len(finite):
        return None
    return pick_overview(factors, float(finite.min()))


def _group_key(source: TiffSource) -> tuple[Any, ...]:
    image = source.images[0]
    fill = source.fill_value
    return (
        source.level,
        image.shape,
        image.block_shape,
        image.tiled,
        source.files[0].info.count,
        source.dtype.str,
        source.bands,
        "nan" if isinstance(fill, float) and math.isnan(fill) else fill,
    )


def _depth(boxes: list[np.ndarray], grid: WindowGrid, chip: tuple[int, int]) -> int:
    """The most of ``boxes`` (target pixel boxes) one chip of the lattice overlaps (an upper
    bound: the lattice is bucketed)."""
    ys, xs = grid.axis("y").starts(), grid.axis("x").starts()
    if not boxes or not len(ys) or not len(xs):
        return 1
    by, bx = -(-len(ys) // _BUCKETS), -(-len(xs) // _BUCKETS)
    ny, nx = -(-len(ys) // by), -(-len(xs) // bx)
    diff = np.zeros((ny + 1, nx + 1), dtype=np.int64)
    for box in boxes:
        a, b = lattice_range(ys, chip[0], box[0], box[2])
        c, d = lattice_range(xs, chip[1], box[1], box[3])
        if b <= a or d <= c:
            continue
        r0, r1, c0, c1 = a // by, (b - 1) // by + 1, c // bx, (d - 1) // bx + 1
        diff[r0, c0] += 1
        diff[r0, c1] -= 1
        diff[r1, c0] -= 1
        diff[r1, c1] += 1
    return max(1, int(diff.cumsum(0).cumsum(1).max()))


def build_inputs(
    plan: ChipPlan,
    chips: WindowGrid,
    chip_size: tuple[int, int],
    *,
    storage_options: Mapping[str, Any] | None = None,
    files: Mapping[str, TiffFile] | None = None,
) -> ChipInputs:
    """Open the rasters of ``plan`` that touch its grid and group them into engine inputs.

    ``chips`` is the stream's chip lattice (the window grid over the target grid's
    pixels); ``files``: headers already read, by href.
    """
    grid = plan.grid
    left, bottom, right, top = grid.bounds
    fp = plan.footprints()
    touching = (fp[:, 0] < right) & (fp[:, 2] > left) & (fp[:, 1] < top) & (fp[:, 3] > bottom)
    where: dict[int, tuple[int, int]] = {}
    for t, slot in enumerate(plan.slots):
        for rank, s in enumerate(slot):
            where[s] = (t, rank)
    used = [s for s in range(len(plan.scenes)) if touching[s] and s in where]
    hrefs = [ref.href for s in used for ref in plan.scenes[s].rasters]
    opened = _open_files(hrefs, storage_options, files or {})
    scene_boxes = pixel_boxes(grid, fp)

    uses: list[dict[str, Any]] = []
    groups: dict[tuple[Any, ...], list[int]] = {}  # key -> use positions
    for s in used:
        scene = plan.scenes[s]
        t, rank = where[s]
        for k, (ref, chans) in enumerate(zip(scene.rasters, scene.channels, strict=True)):
            file = opened[ref.href]
            main = file.header.main
            if main.shape != ref.grid.shape:
                raise DimensionError(
                    f"{redact(ref.href)!r} is {main.shape[0]} x {main.shape[1]} px, but its "
                    f"metadata says {ref.grid.shape[0]} x {ref.grid.shape[1]}; fix the STAC "
                    "item's proj:shape (or pass projection=), or missing_projection='read'."
                )
            count = file.info.count
            bad = [b.index for b in ref.bands if not 1 <= b.index <= count]
            if bad:
                raise DimensionError(
                    f"{redact(ref.href)!r} has {count} bands, but its metadata names band(s) "
                    f"{bad}; fix the item's band metadata."
                )
            methods = tuple(plan.resampling[c] for c in chans)
            radius = kernel_radius(methods)
            full = ref.grid
            rows, cols, heights, widths = _sample_chips(
                chips, chip_size, grid.shape, scene_boxes[s]
            )
            transforms = chip_transforms(grid, rows, cols)
            src = transform_bounds(chip_bounds(transforms, heights, widths), grid.crs, full.crs)
            probe = RasterLevel.of(full, None, full.shape)
            sampled = raster_windows(
                transforms, heights, widths, grid.crs, probe, radius, src_bounds=src
            )
            level_index = _level(plan.overview, file, ref.href, sampled.scale)
            image = file.image(level_index)
            level = RasterLevel.of(full, level_index, image.shape)
            windows = raster_windows(
                transforms, heights, widths, grid.crs, level, radius, src_bounds=src
            )
            widen = np.maximum(1.0, windows.scale * full.res[0] / level.grid.res[0])
            margin = np.ceil(radius * widen)
            finite = np.isfinite(windows.span).all(axis=1) & np.isfinite(margin)
            need = np.ceil(windows.span[finite]) + 2 * (margin[finite, None] + 2) + 2
            nodata = tuple(
                b.nodata if b.nodata is not None else file.info.nodata for b in ref.bands
            )
            single = TiffSource([file], level=level_index, bands=[b.index - 1 for b in ref.bands])
            key = _group_key(single)
            groups.setdefault(key, []).append(len(uses))
            uses.append(
                {
                    "scene": s,
                    "index": k,
                    "slot": t,
                    "rank": rank,
                    "href": ref.href,
                    "channels": tuple(chans),
                    "bands": ref.bands,
                    "nodata": nodata,
                    "methods": methods,
                    "radius": radius,
                    "level": level,
                    "file_obj": file,
                    "aligned": bool(windows.aligned.any()),
                    "warped": bool((~windows.aligned).any()) or not len(windows.aligned),
                    "need": need.max(axis=0) if len(need) else np.array(chip_size, float),
                }
            )
    if not uses:
        raise ConfigError(
            "no scene touches the target grid; check bounds=/grid= against the sources' "
            "footprints (or the CRS they are given in)."
        )
    sources: list[TiffSource] = []
    frames: list[tuple[int, int, int, int]] = []
    depth: list[int] = []
    for g, (key, members) in enumerate(groups.items()):
        files_g: list[TiffFile] = []
        position: dict[str, int] = {}
        for u in members:
            href = uses[u]["href"]
            if href not in position:
                position[href] = len(files_g)
                files_g.append(uses[u]["file_obj"])
            uses[u]["input"] = g
            uses[u]["file"] = position[href]
        level_index, shape = key[0], key[1]
        band_indexes = list(key[6])
        sources.append(TiffSource(files_g, level=level_index, bands=band_indexes, stack_dim="file"))
        fh = fw = 1
        for u in members:
            if uses[u]["aligned"]:
                fh, fw = max(fh, chip_size[0]), max(fw, chip_size[1])
            if uses[u]["warped"]:
                need_h, need_w = (float(v) for v in uses[u]["need"])
                h = min(shape[0], math.ceil(_FRAME_SLACK * need_h) + 4)
                w = min(shape[1], math.ceil(_FRAME_SLACK * need_w) + 4)
                fh, fw = max(fh, h), max(fw, w)
        frames.append((1, len(band_indexes), fh, fw))
        depth.append(_depth([scene_boxes[uses[u]["scene"]] for u in members], chips, chip_size))
    ordered = sorted(
        range(len(uses)), key=lambda u: (uses[u]["slot"], uses[u]["rank"], uses[u]["index"])
    )
    frozen = tuple(
        RasterUse(
            scene=uses[u]["scene"],
            index=uses[u]["index"],
            slot=uses[u]["slot"],
            rank=uses[u]["rank"],
            href=uses[u]["href"],
            channels=uses[u]["channels"],
            bands=uses[u]["bands"],
            nodata=uses[u]["nodata"],
            methods=uses[u]["methods"],
            radius=uses[u]["radius"],
            level=uses[u]["level"],
            input=uses[u]["input"],
            file=uses[u]["file"],
        )
        for u in ordered
    )
    return ChipInputs(
        sources=tuple(sources),
        uses=frozen,
        frames=tuple(frames),
        rows_per_chip=tuple(depth),
        unused_scenes=len(plan.scenes) - len(used),
    )
