"""Which chips of the grid touch a scene: ``skip_empty=True`` leaves the others out.

Planned from the scenes' rasters' outlines (their pixel grids' edges, densified
and reprojected into the target CRS), once, where the stream is built, so the
chips left out are part of the order (a :class:`~earthstream.sampling.WindowSubset`):
epochs, sharding and resume stay exact.  A chip is kept when its part inside
the target grid overlaps an outline's interior (sharing an edge is not
overlapping, as for the reads themselves).
"""

from __future__ import annotations

import numpy as np

from ..geo._boxes import chip_bounds, chip_transforms
from ..geo._grid import GridSpec, transformer
from ..sampling import WindowGrid
from ._inputs import lattice_range, pixel_boxes
from ._plan import ChipPlan

__all__ = ["touch_mask"]

#: Points per edge of a raster's outline reprojected into another CRS.
_OUTLINE_POINTS = 64


def _outline(raster: GridSpec, crs: str) -> np.ndarray:
    """``(k, 2)`` points of ``raster``'s outline in ``crs``."""
    h, w = raster.shape
    t = np.linspace(0.0, 1.0, _OUTLINE_POINTS, endpoint=False)
    rows = np.concatenate([np.zeros_like(t), t * h, np.full_like(t, h), (1 - t) * h])
    cols = np.concatenate([t * w, np.full_like(t, w), (1 - t) * w, np.zeros_like(t)])
    xs, ys = raster.xy(rows, cols)
    if raster.crs != crs:
        xs, ys = transformer(raster.crs, crs).transform(xs, ys)
    return np.column_stack([np.asarray(xs, np.float64), np.asarray(ys, np.float64)])


def touch_mask(plan: ChipPlan, chips: WindowGrid) -> np.ndarray:
    """Boolean, one per chip id (row-major over ``chips.counts``): the chip overlaps the
    outline of some raster of some scene.

    The grid's window dims are ``("y", "x")`` in target pixels.
    """
    import shapely

    grid = plan.grid
    ys, xs = chips.axis("y").starts(), chips.axis("x").starts()
    ch, cw = chips.axis("y").length, chips.axis("x").length
    mask = np.zeros((len(ys), len(xs)), dtype=bool)
    seen: set[GridSpec] = set()
    for scene in plan.scenes:
        for ref in scene.rasters:
            raster = ref.grid
            if raster in seen:
                continue
            seen.add(raster)
            outline = _outline(raster, grid.crs)
            if not np.isfinite(outline).all():
                outline = outline[np.isfinite(outline).all(axis=1)]
                if len(outline) < 3:
                    continue
            lo, hi = outline.min(axis=0), outline.max(axis=0)
            box = pixel_boxes(grid, np.array([[lo[0], lo[1], hi[0], hi[1]]]))[0]
            a, b = lattice_range(ys, ch, box[0], box[2])
            c, d = lattice_range(xs, cw, box[1], box[3])
            if b <= a or d <= c:
                continue
            rectangle = raster.crs == grid.crs and not raster.rotated and not grid.rotated
            if rectangle:  # the outline is the box itself: every chip in range overlaps it
                mask[a:b, c:d] = True
                continue
            r, k = np.meshgrid(ys[a:b], xs[c:d], indexing="ij")
            r, k = r.ravel(), k.ravel()
            heights = np.minimum(ch, grid.height - r)
            widths = np.minimum(cw, grid.width - k)
            bounds = chip_bounds(chip_transforms(grid, r, k), heights, widths)
            boxes = shapely.box(*bounds.T)
            polygon = shapely.Polygon(outline)
            if not polygon.is_valid:
                polygon = shapely.make_valid(polygon)
            shapely.prepare(polygon)
            hit = shapely.intersects(polygon, boxes) & ~shapely.touches(polygon, boxes)
            mask[a:b, c:d] |= hit.reshape(b - a, d - c)
    return mask.reshape(-1)
