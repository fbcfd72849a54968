"""The chip stream kind: chips of a target grid planned as boxes of COG tiles.

What :class:`~earthstream.chips.ChipStream` gives the engine (:func:`chip_kind`).

* **Planner** (:class:`ChipPlanner`): for a span of batches, each chip's pixel
  window on the target grid, the scenes whose footprint it touches (in mosaic
  order), and for each of their rasters the window of the level read
  (:func:`~earthstream.geo._boxes.raster_windows`: the chip itself when it lies
  on the raster's pixel grid, else the covering window plus the kernel's
  margin).  Each (chip, raster) pair is one box of its input, a stacked
  :class:`~earthstream.sources.TiffSource` (``(file, band, y, x)``, tiles as
  chunks), planned with :func:`~earthstream.engine.plan_var`: the engine then
  reads each tile once, through ``storage/``, into its slots however many chips
  use it.
* **Assembler** (:class:`ChipAssembler`): on a cut thread, each pair's box is
  cut from the slots; an aligned box is the chip's raw values, any other is
  warped onto the chip's grid (:func:`~earthstream.geo._warp.warp_bands`).
  Values are decoded (``scale``, ``offset``, NaN where invalid) and mosaicked,
  first valid pixel wins, per time slot; labels are burned from the vector
  index.  The batch carries each chip's transform, bounds and centre.

A batch's pairs (which raster, which box, aligned or warped) travel with its
plan (:class:`ChipBatchPlan`); its rows per input are pairs, not chips, so the
engine's corrupt-chunk dropping (rows = samples) is not offered for chips.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._batch import Batch
from ..engine import (
    BatchArrays,
    BatchBuffers,
    BatchPlan,
    SlotPool,
    StreamKind,
    VarLayout,
    cut_var,
    frame_of,
    new_array,
    plan_var,
)
from ..geo._boxes import chip_bounds, chip_transforms, raster_windows, transform_bounds
from ..geo._grid import GridSpec, transformer
from ..geo._warp import valid_of, warp_bands
from ..sampling import WindowGrid
from ._inputs import ChipInputs
from ._labels import LabelSpec

__all__ = [
    "ChipAssembler",
    "ChipBatchPlan",
    "ChipLayout",
    "ChipPlanner",
    "ChipWork",
    "chip_kind",
    "chip_variables",
]

#: Scenes above which touching chips are found with an STRtree instead of a dense test.
_DENSE_SCENES = 2048


@dataclass(frozen=True)
class ChipLayout:
    """What planning and assembling chips needs (frozen, picklable)."""

    grid: GridSpec
    chips: WindowGrid
    chip_size: tuple[int, int]
    inputs: ChipInputs
    variables: tuple[VarLayout, ...]
    channels: tuple[str, ...]
    n_time: int
    stack: bool
    slot_times: tuple[Any, ...]
    apply_scale: bool
    dtype: np.dtype[Any]
    labels: LabelSpec | None
    footprints: np.ndarray  # (scenes, 4) in the target CRS

    @property
    def image_shape(self) -> tuple[int, ...]:
        h, w = self.chip_size
        c = len(self.channels)
        return (self.n_time, c, h, w) if self.stack else (c, h, w)

    def sample_nbytes(self) -> int:
        """Bytes one chip takes in a batch: image, mask, label."""
        h, w = self.chip_size
        pixels = int(np.prod(self.image_shape))
        total = pixels * (self.dtype.itemsize + 1)
        if self.labels is not None:
            total += h * w * np.dtype(self.labels.dtype).itemsize
        return total + 6 * 8 * 2 + 64

    def scratch_nbytes(self, batch_size: int) -> int:
        """Raster boxes cut for one batch (one per chip and input, as a rule)."""
        return sum(batch_size * int(np.prod(v.lengths)) * v.dtype.itemsize for v in self.variables)


def chip_variables(inputs: ChipInputs) -> tuple[VarLayout, ...]:
    """One engine variable per input: its ``(file, band, y, x)`` tiles, the frame one raster
    read holds (the file dim iterated)."""
    out = []
    for g, (source, frame) in enumerate(zip(inputs.sources, inputs.frames, strict=True)):
        info = source.variables[source.name]
        label = f"{g}:{source.name}" + ("" if source.level is None else f"@{source.level}")
        out.append(VarLayout.of(info, frame, input=g, label=label, keep=(False, True, True, True)))
    return tuple(out)


@dataclass
class ChipWork:
    """The raster reads of one batch, one row per (chip, raster) pair in mosaic order.

    ``chip``: the chip's row in the batch; ``use``: the raster
    (``ChipInputs.uses``); ``row``: the pair's row in its input's plan;
    ``window``: ``(row, col, height, width)`` at the level read; ``aligned``: a
    plain copy (else warped).  ``heights``/``widths``/``transforms``: per chip,
    the part inside the target grid and its transform.  ``skipped``: pairs whose
    raster footprint touched the chip but no pixel was needed.
    """

    chip: np.ndarray
    use: np.ndarray
    row: np.ndarray
    window: np.ndarray
    aligned: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    transforms: np.ndarray
    skipped: int = 0

    def counts(self) -> dict[str, int]:
        n = len(self.heights)
        touched = np.zeros(n, dtype=bool)
        touched[self.chip] = True
        aligned = int(self.aligned.sum())
        return {
            "raster_reads": len(self.chip),
            "aligned_reads": aligned,
            "warped_reads": len(self.chip) - aligned,
            "rasters_skipped": self.skipped,
            "chips_empty": int(n - touched.sum()),
        }


@dataclass
class ChipBatchPlan(BatchPlan):
    """A batch plan with its raster reads (:class:`ChipWork`)."""

    work: ChipWork | None = None


def _touching(boxes: np.ndarray, footprints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(chip, scene)`` pairs whose boxes overlap (sharing an edge is not overlapping),
    sorted by chip then scene."""
    if len(footprints) <= _DENSE_SCENES:
        fp = footprints
        hit = (
            (fp[None, :, 0] < boxes[:, None, 2])
            & (fp[None, :, 2] > boxes[:, None, 0])
            & (fp[None, :, 1] < boxes[:, None, 3])
            & (fp[None, :, 3] > boxes[:, None, 1])
        )
        i, s = np.nonzero(hit)
        return i.astype(np.int64), s.astype(np.int64)
    import shapely

    tree = shapely.STRtree(shapely.box(*footprints.T))
    i, s = tree.query(shapely.box(*boxes.T), predicate="intersects")
    fp, b = footprints[s], boxes[i]
    keep = (fp[:, 0] < b[:, 2]) & (fp[:, 2] > b[:, 0]) & (fp[:, 1] < b[:, 3]) & (fp[:, 3] > b[:, 1])
    i, s = i[keep], s[keep]
    order = np.lexsort((s, i))
    return i[order].astype(np.int64), s[order].astype(np.int64)


@dataclass(frozen=True)
class ChipPlanner:
    """Chips -> (chip, raster) pairs -> boxes of tiles (see the module's docstring)."""

    layout: ChipLayout

    def _pairs(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(chip, use)`` pairs of the chips with ``boxes``: every raster of every scene a
        chip touches, sorted by chip, then in mosaic order."""
        uses = self.layout.inputs.uses
        chip_of, scene_of = _touching(boxes, self.layout.footprints)
        n_scenes = len(self.layout.footprints)
        use_scene = np.array([u.scene for u in uses], dtype=np.int64)
        by_scene = np.argsort(use_scene, kind="stable")
        first = np.searchsorted(use_scene[by_scene], np.arange(n_scenes + 1))
        per = (first[1:] - first[:-1])[scene_of]
        pair_chip = np.repeat(chip_of, per)
        offsets = np.arange(int(per.sum())) - np.repeat(np.cumsum(per) - per, per)
        pair_use = by_scene[first[:-1][np.repeat(scene_of, per)] + offsets]
        order = np.lexsort((pair_use, pair_chip))
        return pair_chip[order], pair_use[order]

    def plan(self, batches: Sequence[tuple[int, np.ndarray]]) -> list[BatchPlan]:
        layout = self.layout
        grid, uses = layout.grid, layout.inputs.uses
        sizes = np.array([len(ids) for _, ids in batches], dtype=np.int64)
        bounds = np.concatenate(([0], np.cumsum(sizes)))
        ids = np.concatenate([ids for _, ids in batches]) if batches else np.zeros(0, np.int64)
        starts = layout.chips.starts_of(ids)
        rows, cols = starts[:, 0], starts[:, 1]
        ch, cw = layout.chip_size
        heights = np.minimum(ch, grid.height - rows)  # edges="pad": the part inside the grid
        widths = np.minimum(cw, grid.width - cols)
        transforms = chip_transforms(grid, rows, cols)
        boxes = chip_bounds(transforms, heights, widths)
        # pairs (chip, raster use) in mosaic order: uses are sorted by slot, rank, index
        pair_chip, pair_use = self._pairs(boxes)
        n_pairs = len(pair_chip)
        window = np.zeros((n_pairs, 4), dtype=np.int64)
        aligned = np.zeros(n_pairs, dtype=bool)
        empty = np.ones(n_pairs, dtype=bool)
        if n_pairs:
            # source bounds once per (chip, CRS), then windows per raster
            crs_of = [u.level.full.crs for u in uses]
            src_bounds = np.empty((n_pairs, 4), dtype=np.float64)
            pair_crs = np.array([crs_of[u] for u in pair_use.tolist()], dtype=object)
            for crs in set(pair_crs.tolist()):
                sel = np.flatnonzero(pair_crs == crs)
                chips_needed, inverse = np.unique(pair_chip[sel], return_inverse=True)
                moved = transform_bounds(boxes[chips_needed], grid.crs, crs)
                src_bounds[sel] = moved[inverse.reshape(-1)]
            order = np.argsort(pair_use, kind="stable")
            cuts = np.flatnonzero(np.diff(pair_use[order])) + 1
            for sel in np.split(order, cuts):
                u = uses[int(pair_use[sel[0]])]
                i = pair_chip[sel]
                w = raster_windows(
                    transforms[i], heights[i], widths[i], grid.crs, u.level, u.radius,
                    src_bounds=src_bounds[sel],
                )  # fmt: skip
                window[sel] = np.column_stack([w.row, w.col, w.height, w.width])
                aligned[sel] = w.aligned
                empty[sel] = w.empty
        keep = ~empty
        pair_batch = np.searchsorted(bounds, pair_chip, side="right") - 1
        # boxes reaching past their raster (aligned chips at its edges) read the fill there
        level_shape = np.array([u.level.grid.shape for u in uses], dtype=np.int64).reshape(-1, 2)
        past = (
            (window[:, 0] < 0)
            | (window[:, 1] < 0)
            | (window[:, 0] + window[:, 2] > level_shape[pair_use, 0])
            | (window[:, 1] + window[:, 3] > level_shape[pair_use, 1])
        ) & keep
        skipped = np.bincount(pair_batch[empty], minlength=len(batches))
        padded = np.bincount(pair_batch[past], minlength=len(batches)) > 0
        pair_chip, pair_use, window, aligned, pair_batch = (
            pair_chip[keep], pair_use[keep], window[keep], aligned[keep], pair_batch[keep]
        )  # fmt: skip
        # rows of each input: its pairs, in order (so sorted by batch)
        use_input = np.array([u.input for u in uses], dtype=np.int64)
        use_file = np.array([u.file for u in uses], dtype=np.int64)
        pair_input = use_input[pair_use]
        pair_row = np.zeros(len(pair_chip), dtype=np.int64)
        per_var = []
        n_vars = len(layout.variables)
        for g, var in enumerate(layout.variables):
            sel = np.flatnonzero(pair_input == g)
            counts = np.bincount(pair_batch[sel], minlength=len(batches))
            row_bounds = np.concatenate(([0], np.cumsum(counts)))
            pair_row[sel] = np.arange(len(sel)) - row_bounds[pair_batch[sel]]
            win = window[sel]
            nb = var.lengths[1]
            starts_g = np.column_stack(
                [use_file[pair_use[sel]], np.zeros(len(sel), np.int64), win[:, 0], win[:, 1]]
            )
            extents = np.column_stack(
                [np.ones(len(sel), np.int64), np.full(len(sel), nb), win[:, 2], win[:, 3]]
            )
            _, _, fh, fw = var.lengths
            if len(sel) and ((win[:, 2] > fh).any() or (win[:, 3] > fw).any()):
                raise RuntimeError(  # pragma: no cover - frames are sized with slack
                    f"a raster window of {int(win[:, 2].max())} x {int(win[:, 3].max())} px "
                    f"exceeds the frame of input {g} ({fh} x {fw}); please report this."
                )
            per_var.append(plan_var(var, g, n_vars, starts_g, row_bounds, extents=extents))
        bounds_list = bounds.tolist()
        pair_bounds = np.searchsorted(pair_batch, np.arange(len(batches) + 1)).tolist()
        plans: list[BatchPlan] = []
        for b, (j, batch_ids) in enumerate(batches):
            r0, r1 = bounds_list[b], bounds_list[b + 1]
            p0, p1 = pair_bounds[b], pair_bounds[b + 1]
            work = ChipWork(
                chip=pair_chip[p0:p1] - r0,
                use=pair_use[p0:p1],
                row=pair_row[p0:p1],
                window=window[p0:p1],
                aligned=aligned[p0:p1],
                heights=heights[r0:r1],
                widths=widths[r0:r1],
                transforms=transforms[r0:r1],
                skipped=int(skipped[b]),
            )
            plans.append(
                ChipBatchPlan(
                    index=j,
                    ids=batch_ids,
                    starts=starts[r0:r1],
                    vars=[p[b] for p in per_var],
                    padded=bool(padded[b]),  # boxes past a raster: the fill there
                    work=work,
                )
            )
        return plans


def _decode_into(
    dst: np.ndarray,
    raw: np.ndarray,
    ok: np.ndarray,
    scale: float,
    offset: float,
    apply_scale: bool,
) -> None:
    """``dst = raw * scale + offset`` (the arithmetic of :func:`earthstream.geo.decode`),
    NaN where not ``ok``.  Without a scale or offset (1 and 0) a cast: the same values
    (``x * 1.0 + 0.0`` is ``x`` for dtypes of at most 32 bits)."""
    if apply_scale and (scale != 1.0 or offset != 0.0 or raw.dtype.itemsize > 4):
        np.multiply(raw, scale, out=dst, casting="unsafe")
        dst += offset
    else:
        np.copyto(dst, raw, casting="unsafe")
    if not ok.all():
        np.copyto(dst, np.nan, where=~ok)


@dataclass
class ChipAssembler:
    """Boxes -> chips: cut, warp, decode, mosaic, labels (see the module's docstring)."""

    layout: ChipLayout
    counts: deque[dict[str, int]] = field(default_factory=deque)

    # -- arrays -----------------------------------------------------------------------
    def _outputs(self, n: int, buffers: BatchBuffers | None) -> dict[str, np.ndarray]:
        layout = self.layout
        shape = (n, *layout.image_shape)
        empty = buffers.empty if buffers is not None else np.empty
        out = {"image": empty(shape, layout.dtype), "valid": empty(shape, np.bool_)}
        if layout.labels is not None:
            h, w = layout.chip_size
            out["label"] = np.empty((n, h, w), dtype=layout.labels.dtype)
        return out

    def cut(
        self,
        pools: Sequence[SlotPool],
        plan: BatchPlan,
        slots: Sequence[np.ndarray],
        buffers: BatchBuffers | None,
    ) -> BatchArrays:
        work = _work(plan)
        boxes: list[np.ndarray | list[np.ndarray] | None] = []
        for pool, vplan, s in zip(pools, plan.vars, slots, strict=True):
            n = len(vplan.which)
            if not n:
                boxes.append(None)
            elif vplan.all_inside:  # each box inside one tile: views of the slots (no copy)
                boxes.append(_views(pool, vplan, s))
            else:
                boxes.append(cut_var(pool, vplan, s, n, None, plan.padded))
        out = self._outputs(len(plan.ids), buffers)
        self._assemble(work, boxes, out)
        return BatchArrays(out, None, sum(a.nbytes for a in out.values()))

    def allocate(self, n: int, prefill: bool, buffers: BatchBuffers | None) -> BatchArrays:
        """Raw boxes for a batch the engine fills tile by tile (tight memory): per input,
        room for the most rows ``n`` chips can need; assembled in :meth:`finish`."""
        data = {}
        for g, var in enumerate(self.layout.variables):
            rows = n * self.layout.inputs.rows_per_chip[g]
            data[f"raw:{g}"] = new_array(var, rows, prefill, None)
        return BatchArrays(data, None, sum(a.nbytes for a in data.values()))

    def frame(self, arrays: BatchArrays, var: int) -> np.ndarray:
        return frame_of(arrays.data[f"raw:{var}"], self.layout.variables[var])

    def take_rows(self, arrays: BatchArrays, rows: np.ndarray | slice) -> BatchArrays:
        data = {k: np.array(a[rows]) for k, a in arrays.data.items() if not k.startswith("raw:")}
        return BatchArrays(data, None, sum(a.nbytes for a in data.values()))

    # -- assembly -----------------------------------------------------------------------
    def _assemble(
        self,
        work: ChipWork,
        boxes: Sequence[np.ndarray | list[np.ndarray] | None],
        out: dict[str, np.ndarray],
    ) -> None:
        layout = self.layout
        uses = layout.inputs.uses
        image, mask = out["image"], out["valid"]
        n = image.shape[0]
        if not layout.stack:  # one time slot: (n, 1, C, H, W) views
            image, mask = image[:, None], mask[:, None]
        first = np.ones(image.shape[:3], dtype=bool)  # (chip, slot, channel) not written yet
        crs = layout.grid.crs
        for p in range(len(work.chip)):
            i = int(work.chip[p])
            u = uses[int(work.use[p])]
            rows = boxes[u.input]
            assert rows is not None
            box: np.ndarray = rows[int(work.row[p])]
            h, w = int(work.heights[i]), int(work.widths[i])
            wr, wc, wh, ww = (int(v) for v in work.window[p])
            if work.aligned[p]:
                raw = box[:, :h, :w]
                height, width = u.level.grid.shape
                r0, r1 = max(0, -wr), min(h, height - wr)
                c0, c1 = max(0, -wc), min(w, width - wc)
                if (r0, r1, c0, c1) == (0, h, 0, w):
                    ok = np.stack([valid_of(raw[j], nd) for j, nd in enumerate(u.nodata)])
                else:
                    ok = np.zeros(raw.shape, dtype=bool)
                    for j, nd in enumerate(u.nodata):
                        ok[j, r0:r1, c0:c1] = valid_of(raw[j, r0:r1, c0:c1], nd)
            else:
                src = box[:, :wh, :ww]
                a, b, c, d, e, f = u.level.grid.transform
                src_transform = (a, b, c + a * wc + b * wr, d, e, f + d * wc + e * wr)
                raw, ok = warp_bands(
                    src, src_transform, u.level.grid.crs, work.transforms[i], crs, (h, w),
                    u.methods, u.nodata,
                )  # fmt: skip
            t = u.slot if layout.stack else 0
            for j, ch in enumerate(u.channels):
                dst = image[i, t, ch, :h, :w]
                seen = mask[i, t, ch, :h, :w]
                if first[i, t, ch]:
                    _decode_into(
                        dst, raw[j], ok[j], u.bands[j].scale, u.bands[j].offset, layout.apply_scale
                    )
                    seen[...] = ok[j]
                    first[i, t, ch] = False
                    continue
                new = ok[j] & ~seen
                if not new.any():
                    continue
                values = np.empty((h, w), dtype=dst.dtype)
                _decode_into(
                    values, raw[j], ok[j], u.bands[j].scale, u.bands[j].offset, layout.apply_scale
                )
                np.copyto(dst, values, where=new)
                seen |= new
        # what nothing wrote: no data (NaN, not valid); chips past the grid's edge too
        image[first] = np.nan
        mask[first] = False
        ch, cw = layout.chip_size
        for i in np.flatnonzero((work.heights < ch) | (work.widths < cw)).tolist():
            h, w = int(work.heights[i]), int(work.widths[i])
            image[i, :, :, h:, :] = np.nan
            image[i, :, :, :h, w:] = np.nan
            mask[i, :, :, h:, :] = False
            mask[i, :, :, :h, w:] = False
        if layout.labels is not None:
            self._labels(work, out["label"], n)

    def _labels(self, work: ChipWork, label: np.ndarray, n: int) -> None:
        layout = self.layout
        spec = layout.labels
        assert spec is not None
        grid = layout.grid
        index = spec.source.index(grid.crs, grid.bounds)
        for i in range(n):
            h, w = int(work.heights[i]), int(work.widths[i])
            chip = GridSpec(grid.crs, tuple(work.transforms[i].tolist()), (h, w))
            if h < label.shape[1] or w < label.shape[2]:
                label[i] = spec.ignore  # past the edge; the inside is burned next
            label[i, :h, :w] = index.rasterize(
                chip, all_touched=spec.all_touched, fill=spec.fill, dtype=spec.dtype
            )

    # -- the batch ------------------------------------------------------------------------
    def finish(self, plan: BatchPlan, arrays: BatchArrays, epoch: int) -> Batch:
        work = _work(plan)
        layout = self.layout
        if "raw:0" in arrays.data:  # filled tile by tile (tight memory): assemble here
            boxes = [arrays.data[f"raw:{g}"] for g in range(len(layout.variables))]
            out = self._outputs(len(plan.ids), None)
            self._assemble(work, boxes, out)
        else:
            out = arrays.data
        self.counts.append(work.counts())
        return self._batch(plan, work, out, epoch)

    def _batch(
        self, plan: BatchPlan, work: ChipWork, out: dict[str, np.ndarray], epoch: int
    ) -> Batch:
        layout = self.layout
        grid = layout.grid
        ids = plan.ids
        n = len(ids)
        rows, cols = plan.starts[:, 0], plan.starts[:, 1]
        h, w = layout.chip_size
        transforms = work.transforms
        a, b, _, d, e, _ = grid.transform
        x0, y0 = transforms[:, 2], transforms[:, 5]
        xs = np.stack([x0, x0 + a * w, x0 + b * h, x0 + a * w + b * h])
        ys = np.stack([y0, y0 + d * w, y0 + e * h, y0 + d * w + e * h])
        bounds = np.column_stack([xs.min(0), ys.min(0), xs.max(0), ys.max(0)])
        cx = x0 + a * w / 2 + b * h / 2
        cy = y0 + d * w / 2 + e * h / 2
        if grid.crs in ("EPSG:4326", "OGC:CRS84"):
            lon, lat = cx, cy
        else:
            lon, lat = transformer(grid.crs, "EPSG:4326").transform(cx, cy)
        coords: dict[str, np.ndarray] = {
            "crs": np.full(n, grid.crs),
            "transform": transforms.copy(),
            "bounds": bounds,
            "x": cx,
            "y": cy,
            "lon": np.asarray(lon, dtype=np.float64),
            "lat": np.asarray(lat, dtype=np.float64),
        }
        if layout.stack:
            times = np.array(
                [np.datetime64("NaT", "ns") if t is None else t for t in layout.slot_times],
                dtype="datetime64[ns]",
            )
            coords["time"] = np.broadcast_to(times, (n, len(times))).copy()
        image_dims = ("time", "band", "y", "x") if layout.stack else ("band", "y", "x")
        data = {"image": out["image"]}
        dims: dict[str, tuple[str, ...]] = {"image": image_dims}
        attrs: dict[str, Any] = {
            "grid": grid,
            "crs": grid.crs,
            "time": "stack" if layout.stack else "mosaic",
        }
        if layout.labels is not None:
            data[layout.labels.name] = out["label"]
            dims[layout.labels.name] = ("y", "x")
            attrs["label_fill"] = layout.labels.fill
            attrs["label_ignore"] = layout.labels.ignore
        return Batch(
            data=data,
            dims=dims,
            starts={"y": rows, "x": cols},
            coords=coords,
            window_ids=ids,
            epoch=epoch,
            index=plan.index,
            mask=out["valid"],
            mask_dims=image_dims,
            channels=layout.channels,
            attrs=attrs,
        )


def _views(pool: SlotPool, vplan: Any, slots: np.ndarray) -> list[np.ndarray]:
    """The boxes of a variable whose every box lies inside one tile, as views of the slots
    holding them (valid while the engine holds those slots: during the cut)."""
    lengths = pool.var.lengths
    keep = pool.var.keep
    slab = pool.slab
    out = []
    for which, local in zip(vplan.which.tolist(), vplan.local.tolist(), strict=True):
        index: list[int | slice] = [int(slots[which])]
        index += [slice(a, a + n) for a, n in zip(local, lengths, strict=True)]
        box = slab[tuple(index)]
        out.append(box[tuple(slice(None) if k else 0 for k in keep)])
    return out


def _work(plan: BatchPlan) -> ChipWork:
    if not isinstance(plan, ChipBatchPlan) or plan.work is None:
        raise TypeError("a chip assembler needs the plans of a ChipPlanner")
    return plan.work


def chip_kind(layout: ChipLayout) -> StreamKind:
    """The chip stream kind of ``layout`` (its inputs: ``layout.inputs.sources``)."""
    return StreamKind(
        variables=layout.variables,
        planner=ChipPlanner(layout),
        assembler=ChipAssembler(layout),
        direct=False,
    )
