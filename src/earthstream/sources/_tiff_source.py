"""GeoTIFF tiles as chunks: a COG (or a stack of same-grid COGs) as a chunked array.

:func:`open_tiff` reads each file's header once (one request for a COG, see
:mod:`earthstream.sources._tiff`) and describes the image as one variable,
``band_data`` with dims ``("band", "y", "x")`` (as ``xarray.open_dataset(path,
engine="rasterio")`` names them), whose chunks are the file's tiles (or
strips): ``(bands, tile rows, tile cols)``.  The engine fetches tile bytes
through ``storage/`` (merged ranges of adjacent tiles, many in flight, with the
same retries and report as Zarr chunks) and decodes each tile once into its
cache slot, however many chips and bands use it.

Why one ``(band, y, x)`` variable and not one variable per band: the samples
of a pixel-interleaved COG (GDAL's default) share each tile, so a variable per
band would decode every tile once per band; with one variable a tile is
decoded once and a chip comes out as ``(B, bands, H, W)``, already stacked.

Each overview level is its own source (:meth:`TiffSource.overview`); tiles with
codecs decoded here are read natively (see :mod:`~earthstream.sources._tiff_codecs`),
others (JPEG, WebP, LERC, odd bit depths) through GDAL, tile by tile (slower,
and GDAL does its own I/O: shown in ``repr`` and ``TiffSource.fallback``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._names import suggest
from .._units import format_bytes
from ..errors import (
    ChunkDecodeError,
    ConfigError,
    CRSError,
    DimensionError,
    StoreNotFoundError,
    VariableNotFoundError,
)
from ..protocols import RequestCounts, Span
from ..storage._readers import ByteReader, keep_inherited, open_reader
from ._base import VariableInfo
from ._tiff import TiffImage
from ._tiff_codecs import BlockDecoder, native_reason
from ._tiff_file import TiffFile, band_indexes

__all__ = ["TiffSource"]


@dataclass(frozen=True)
class _Tile:
    """The stored bytes of one chunk: one buffer per segment (``None``: sparse)."""

    segments: tuple[Any, ...]
    where: str


@dataclass(frozen=True)
class _Bad:
    message: str


_GDAL = object()  # fetch result of images read through GDAL at decode time


class TiffSource:
    """Tiles of one or more GeoTIFFs as the chunks of one variable (see :func:`open_tiff`).

    Holds only metadata (headers, grid, bands); readers and decoders are created
    lazily in each process, so the source pickles to DataLoader workers.
    """

    def __init__(
        self,
        files: Sequence[TiffFile],
        *,
        level: int | None = None,
        bands: Sequence[int] | None = None,
        name: str = "band_data",
        stack_dim: str | None = None,
        stack_coords: Any = None,
    ) -> None:
        if not files:
            raise ConfigError("open_tiff needs at least one file.")
        if len(files) > 1 and stack_dim is None:
            raise ConfigError("several files need stack_dim= (the name of the dim they form).")
        self.files = tuple(files)
        self.level = level
        self.name = name
        self.stack_dim = stack_dim
        first = self.files[0]
        count = first.info.count
        self.bands = tuple(range(count)) if bands is None else tuple(int(b) for b in bands)
        for b in self.bands:
            if not 0 <= b < count:
                raise VariableNotFoundError(
                    f"band {b + 1} is not in {first.display!r}; it has bands 1..{count}."
                )
        if not self.bands:
            raise VariableNotFoundError("no bands were selected; pass at least one.")
        self.images = tuple(f.image(level) for f in self.files)
        self.fallback = tuple(
            self._fallback_reason(f, im) for f, im in zip(self.files, self.images, strict=True)
        )
        self.dtype = self._dtype(0)
        self._check_stack()
        if stack_dim is not None:
            values = np.arange(len(files)) if stack_coords is None else np.asarray(stack_coords)
            if values.shape != (len(files),):
                raise ConfigError(
                    f"stack_coords has shape {values.shape}; it needs one value per file "
                    f"({len(files)})."
                )
            self._stack_values: np.ndarray | None = values
        else:
            self._stack_values = None
        self._init_lazy()

    # -- checks -----------------------------------------------------------------------
    @staticmethod
    def _fallback_reason(file: TiffFile, image: TiffImage) -> str | None:
        reason = native_reason(image)
        if reason is None:
            if image.samples != file.info.count:
                reason = f"{image.samples} samples where GDAL sees {file.info.count} bands"
            elif image.dtype != np.dtype(file.info.dtypes[0]):
                reason = f"samples stored as {image.dtype} that GDAL reads as {file.info.dtypes[0]}"
        return reason

    def _dtype(self, i: int) -> np.dtype[Any]:
        image, info = self.images[i], self.files[i].info
        if self.fallback[i] is None and image.dtype is not None:
            return image.dtype
        return np.dtype(info.dtypes[self.bands[0]])

    def _check_stack(self) -> None:
        first, image = self.files[0], self.images[0]
        for i, (file, other) in enumerate(zip(self.files, self.images, strict=True)):
            if i == 0:
                continue
            problems = []
            if other.shape != image.shape:
                problems.append(f"shape {other.shape} (the first: {image.shape})")
            if other.block_shape != image.block_shape or other.tiled != image.tiled:
                problems.append(f"blocks {other.block_shape} (the first: {image.block_shape})")
            if file.info.count != first.info.count:
                problems.append(f"{file.info.count} bands (the first: {first.info.count})")
            if self._dtype(i) != self.dtype:
                problems.append(f"dtype {self._dtype(i)} (the first: {self.dtype})")
            if problems:
                raise DimensionError(
                    f"{file.display!r} cannot be stacked with {first.display!r}: it has "
                    f"{'; '.join(problems)}. Stack files of one shape, tiling, band count "
                    "and dtype (e.g. one tile grid of a time series)."
                )

    # -- process-local state, rebuilt after unpickling ------------------------------------
    def _init_lazy(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._readers: dict[str, ByteReader] = {}
        self._decoders: dict[int, BlockDecoder] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_lock", "_pid", "_readers", "_decoders"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_lazy()

    def _check_process(self) -> None:
        if self._pid != os.getpid():  # forked: never share clients across processes
            keep_inherited(self._readers)
            self._init_lazy()

    def _reader(self, file: TiffFile) -> ByteReader:
        self._check_process()
        url = file.location.url
        reader = self._readers.get(url)
        if reader is None:
            with self._lock:
                reader = self._readers.get(url)
                if reader is None:
                    reader = self._readers[url] = open_reader(file.location)
        return reader

    def _decoder(self, f: int) -> BlockDecoder:
        self._check_process()
        decoder = self._decoders.get(f)
        if decoder is None:
            image = self.images[f]
            decoder = BlockDecoder(
                compression=image.compression,
                predictor=image.predictor,
                dtype=self.dtype,
                byteorder=self.files[f].header.byteorder,
                samples=image.samples,
                planar=image.planar,
                block_shape=image.block_shape,
                bands=self.bands,
            )
            with self._lock:
                self._decoders[f] = decoder
        return decoder

    # -- description --------------------------------------------------------------------
    @property
    def stacked(self) -> bool:
        return self.stack_dim is not None

    @property
    def dims(self) -> tuple[str, ...]:
        base = ("band", "y", "x")
        return (self.stack_dim, *base) if self.stack_dim is not None else base

    @property
    def shape(self) -> tuple[int, ...]:
        image = self.images[0]
        base = (len(self.bands), image.height, image.width)
        return (len(self.files), *base) if self.stacked else base

    @property
    def chunks(self) -> tuple[int, ...]:
        bh, bw = self.images[0].block_shape
        base = (len(self.bands), bh, bw)
        return (1, *base) if self.stacked else base

    @property
    def fill_value(self) -> Any:
        """What sparse tiles (and padded edges) hold: GDAL's nodata, else 0."""
        nodata = self.files[0].info.nodata
        if nodata is None:
            return np.zeros((), self.dtype).item()
        if np.isnan(nodata):
            return float("nan") if self.dtype.kind == "f" else 0
        value = np.asarray(nodata)
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            if not (info.min <= nodata <= info.max and float(nodata).is_integer()):
                return 0
        return value.astype(self.dtype).item()

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        """The affine transform of this level (of the first file)."""
        return self.files[0].transform(self.level)

    @property
    def crs(self) -> str | None:
        return self.files[0].info.crs

    @property
    def grid(self) -> Any:
        """The :class:`~earthstream.geo.GridSpec` of this level (of the first file)."""
        from ..geo._grid import GridSpec

        if self.crs is None:
            raise CRSError(f"{self.files[0].display!r} has no CRS in its header.")
        return GridSpec(self.crs, self.transform, self.images[0].shape)

    @property
    def overviews(self) -> tuple[int, ...]:
        """Decimation factor of each overview level (GDAL's ``overviews(1)``)."""
        main = self.files[0].header.main
        return tuple(round(main.width / im.width) for im in self.files[0].header.overviews)

    def overview(self, level: int | None) -> TiffSource:
        """The same files at overview ``level`` (``None``: full resolution); no I/O."""
        return TiffSource(
            self.files,
            level=level,
            bands=self.bands,
            name=self.name,
            stack_dim=self.stack_dim,
            stack_coords=self._stack_values,
        )

    def select_bands(self, bands: Sequence[int | str]) -> TiffSource:
        """The same files restricted to ``bands`` of the file (1-based numbers or
        descriptions, in the order given); no I/O."""
        chosen = band_indexes(self.files[0], bands)
        return TiffSource(
            self.files,
            level=self.level,
            bands=chosen,
            name=self.name,
            stack_dim=self.stack_dim,
            stack_coords=self._stack_values,
        )

    @property
    def variables(self) -> Mapping[str, VariableInfo]:
        info = self.files[0].info
        image = self.images[0]
        attrs = {
            "crs": self.crs,
            "transform": self.transform,
            "nodata": info.nodata,
            "scales": tuple(info.scales[b] for b in self.bands),
            "offsets": tuple(info.offsets[b] for b in self.bands),
            "descriptions": tuple(info.descriptions[b] for b in self.bands),
            "overview_level": self.level,
            "compression": image.compression_name,
            "predictor": image.predictor,
            "interleave": "pixel" if image.planar == 1 else "band",
        }
        codecs = (image.compression_name,) + (
            (f"predictor{image.predictor}",) if image.predictor != 1 else ()
        )
        return {
            self.name: VariableInfo(
                name=self.name,
                dims=self.dims,
                shape=self.shape,
                dtype=self.dtype,
                chunks=self.chunks,
                fill_value=self.fill_value,
                codecs=codecs,
                attrs=attrs,
            )
        }

    @property
    def coords(self) -> Mapping[str, np.ndarray]:
        """``band`` (1-based numbers), ``y``/``x`` pixel centres (north-up grids shared by
        every file), and the stack dim's values."""
        out: dict[str, np.ndarray] = {}
        if self._stack_values is not None and self.stack_dim is not None:
            out[self.stack_dim] = self._stack_values
        out["band"] = np.asarray(self.bands, dtype=np.int64) + 1
        t = self.transform
        same = all(f.transform(self.level) == t for f in self.files)
        if same and t[1] == 0 and t[3] == 0:
            a, _, c, _, e, f = t
            h, w = self.images[0].shape
            # as affine (rasterio, rioxarray): transform * (col + 0.5, row + 0.5)
            out["x"] = (np.arange(w) + 0.5) * a + c
            out["y"] = (np.arange(h) + 0.5) * e + f
        return out

    @property
    def selection(self) -> Mapping[str, Span]:
        """Empty: every pixel of the image (a chip stream's ``isel`` cuts it)."""
        return {}

    def select(self, variables: Sequence[str]) -> TiffSource:
        names = [variables] if isinstance(variables, str) else list(variables)
        for n in names:
            if n != self.name:
                raise VariableNotFoundError(
                    f"variable {n!r} is not in the source.{suggest(n, [self.name])} "
                    f"Available variables: {self.name}. (Select bands with select_bands.)"
                )
        if not names:
            raise VariableNotFoundError(f"no variables were selected; pass [{self.name!r}].")
        return self

    # -- chunk addressing ------------------------------------------------------------------
    def _split(self, index: tuple[int, ...]) -> tuple[int, int, int]:
        if self.stacked:
            f, b, r, c = index
        else:
            f = 0
            b, r, c = index
        if b != 0:
            raise IndexError(f"band chunk index {b}: the bands are one chunk (index 0)")
        return f, r, c

    def _segments(self, f: int, r: int, c: int) -> list[tuple[int, int]]:
        """(offset, byte count) of each stored block of chunk ``(r, c)`` of file ``f``."""
        image = self.images[f]
        if image.planar == 1:
            return [(int(image.offsets[0, r, c]), int(image.bytecounts[0, r, c]))]
        return [(int(image.offsets[b, r, c]), int(image.bytecounts[b, r, c])) for b in self.bands]

    def chunk_location(self, name: str, index: tuple[int, ...]) -> str:
        """Where chunk ``index`` is stored (for messages and reports)."""
        f, r, c = self._split(index)
        image = self.images[f]
        kind = "tile" if image.tiled else "strip"
        level = "full resolution" if self.level is None else f"overview {self.level}"
        spans = ", ".join(f"bytes {o}-{o + n}" for o, n in self._segments(f, r, c))
        return f"{self.files[f].display} {kind} (row {r}, col {c}) of {level} ({spans})"

    # -- data ------------------------------------------------------------------------------
    def read_chunk(
        self, name: str, index: tuple[int, ...], out: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Decode chunk ``index``: all selected bands of one tile (``None``: sparse tile)."""
        (raw,) = self.fetch_chunks(name, [index])
        return self.decode_chunk(name, index, raw, out)

    @property
    def io_concurrency(self) -> int:
        """Requests worth keeping in flight: 0 for local files (one stage is enough)."""
        location = self.files[0].location
        if location.is_local:
            return 0
        return int(location.store_options().max_requests)

    def fetch_group(self, name: str, index: tuple[int, ...]) -> Any:
        """Tiles of one tile row are fetched together: their byte ranges merge."""
        return index[:-1]

    def fetch_chunks(self, name: str, indices: Sequence[tuple[int, ...]]) -> list[Any]:
        """The stored bytes of several chunks (I/O only; ``None``: every block sparse).

        The byte ranges of one file go out as one ``get_ranges`` call: adjacent
        tiles merge into one request.
        """
        out: list[Any] = [None] * len(indices)
        by_file: dict[int, list[tuple[int, int, int]]] = {}
        for i, index in enumerate(indices):
            f, r, c = self._split(index)
            by_file.setdefault(f, []).append((i, r, c))
        for f, members in by_file.items():
            if self.fallback[f] is not None:
                for i, _, _ in members:
                    out[i] = _GDAL
                continue
            file = self.files[f]
            segments: dict[int, list[Any]] = {}
            wanted: list[tuple[int, int, int, int]] = []  # (i, segment, start, end)
            for i, r, c in members:
                parts = self._segments(f, r, c)
                segments[i] = [None] * len(parts)
                for k, (offset, count) in enumerate(parts):
                    if offset == 0 or count == 0:
                        continue  # sparse: not stored
                    if offset + count > file.size:
                        out[i] = _Bad(
                            f"{self.chunk_location(name, indices[i])} lies past the end of "
                            f"the file ({file.size} bytes): the file is truncated."
                        )
                        break
                    wanted.append((i, k, offset, offset + count))
            wanted = [w for w in wanted if not isinstance(out[w[0]], _Bad)]
            if wanted:
                reader = self._reader(file)
                starts = [w[2] for w in wanted]
                ends = [w[3] for w in wanted]
                if len(wanted) == 1:
                    one = reader.get_range(file.key, starts[0], ends[0])
                    got = None if one is None else [one]
                else:
                    got = reader.get_ranges(file.key, starts, ends)
                if got is None:
                    raise StoreNotFoundError(f"{file.display!r} disappeared after it was opened.")
                for (i, k, _, _), data in zip(wanted, got, strict=True):
                    segments[i][k] = data
            for i, _, _ in members:
                if isinstance(out[i], _Bad):
                    continue
                parts = segments[i]
                if any(p is not None for p in parts):
                    out[i] = _Tile(tuple(parts), "")
        return out

    def decode_chunk(
        self, name: str, index: tuple[int, ...], raw: Any, out: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Decode what :meth:`fetch_chunks` returned for chunk ``index`` into ``out``."""
        if raw is None:
            return None
        if isinstance(raw, _Bad):
            raise ChunkDecodeError(raw.message)
        f, r, c = self._split(index)
        if out is None:
            out = np.full(self.chunks, self.fill_value, dtype=self.dtype)
        target = out[0] if self.stacked else out
        if raw is _GDAL:
            self._read_gdal(f, r, c, target)
            return out
        image = self.images[f]
        rows = image.block_rows(r)
        decoder = self._decoder(f)
        try:
            decoder.decode(raw.segments, rows, target, self.fill_value)
        except ChunkDecodeError as exc:
            raise ChunkDecodeError(
                f"{self.chunk_location(name, index)} could not be decoded "
                f"({self.images[f].compression_name}): {exc}"
            ) from exc.__cause__
        return out

    def _read_gdal(self, f: int, r: int, c: int, out: np.ndarray) -> None:
        """Read one block's window through GDAL (images this package does not decode)."""
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window

        from ..geo._gdal import gdal_env, open_dataset

        image = self.images[f]
        bh, bw = image.block_shape
        row0, col0 = r * bh, c * bw
        h, w = min(bh, image.height - row0), min(bw, image.width - col0)
        file = self.files[f]
        try:
            with gdal_env():
                ds = open_dataset(file.gdal_path, self.level)
                data = ds.read([b + 1 for b in self.bands], window=Window(col0, row0, w, h))
        except RasterioIOError as exc:
            raise ChunkDecodeError(
                f"GDAL could not read block (row {r}, col {c}) of {file.display!r}: "
                f"{file.location.redact(str(exc))}"
            ) from None
        out[:, :h, :w] = data

    def request_stats(self) -> RequestCounts:
        """Requests, retries, bytes and failures of this process's readers (all files)."""
        total: RequestCounts = {"requests": 0, "retries": 0, "bytes": 0, "failures": {}}
        if self._pid != os.getpid():
            return total
        for reader in list(self._readers.values()):
            snap = reader.stats.snapshot()
            total["requests"] += snap["requests"]
            total["retries"] += snap["retries"]
            total["bytes"] += snap["bytes"]
            for kind, n in snap["failures"].items():
                total["failures"][kind] = total["failures"].get(kind, 0) + n
        return total

    def __repr__(self) -> str:
        image = self.images[0]
        first = self.files[0]
        where = (
            first.display
            if len(self.files) == 1
            else f"{len(self.files)} files from {first.display}"
        )
        level = "full resolution" if self.level is None else f"overview {self.level}"
        info = self.variables[self.name]
        lines = [
            f"<TiffSource {where!r} ({level})>",
            f"  {self.name}  ({', '.join(self.dims)})  {self.dtype}  shape={self.shape}  "
            f"chunks={self.chunks}  {'+'.join(info.codecs)}  {format_bytes(info.nbytes)}",
            f"  crs={self.crs}  overviews={list(self.overviews)}  "
            f"{'tiles' if image.tiled else 'strips'} {image.block_shape}",
        ]
        reasons = {r for r in self.fallback if r is not None}
        if reasons:
            lines.append(f"  (read through GDAL, slower: {'; '.join(sorted(reasons))})")
        return "\n".join(lines)
