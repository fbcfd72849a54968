"""Independent reads with rasterio (reproject / WarpedVRT), to compare chips against."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def reproject_read(path: Path | str, chip, resampling: str = "nearest", overview_level=None):
    """Raw values and validity of ``path`` on ``chip``: ``rasterio.warp.reproject`` of the
    whole file (or of one overview level), not windowed."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    kwargs = {} if overview_level is None else {"overview_level": overview_level}
    with rasterio.open(path, **kwargs) as src:
        nodata = src.nodata
        dst = np.full((src.count, *chip.shape), nodata if nodata is not None else 0, src.dtypes[0])
        reproject(
            rasterio.band(src, list(range(1, src.count + 1))),
            dst,
            dst_transform=chip.affine,
            dst_crs=chip.crs,
            dst_nodata=nodata,
            resampling=Resampling[resampling],
        )
    valid = dst != nodata if nodata is not None else np.ones(dst.shape, bool)
    return dst, valid


def warped_vrt_read(path: Path | str, chip, resampling: str = "nearest"):
    """The same through a ``WarpedVRT`` on the chip grid."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    with (
        rasterio.open(path) as src,
        WarpedVRT(
            src,
            crs=chip.crs,
            transform=chip.affine,
            width=chip.width,
            height=chip.height,
            resampling=Resampling[resampling],
        ) as vrt,
    ):
        return vrt.read()
