"""Decoding TIFF tiles and strips into engine slots, with imagecodecs.

One block (tile or strip) of a pixel-interleaved file holds every sample of its
pixels, ``(rows, cols, samples)``; a planar file stores one block per sample.
The engine's chunk is ``(bands, rows, cols)``: all selected bands of one block,
so a tile is decoded once however many bands and chips use it.

* planar blocks, and chunky blocks of one sample, decode straight into the
  slot (no temporary) when the byte order is native;
* chunky blocks of several samples decode into a per-thread scratch buffer
  (allocated once: no page faults per tile) and are transposed into the slot
  (about 0.3-0.6 ms for a 512 x 512 x 4 uint16 tile, against 2-5 ms to inflate it).

The decompressors are imagecodecs' (libdeflate for deflate: about twice
zlib's speed; zstd, LZW, PackBits, LZMA); each releases the GIL.  Predictors:
2 (horizontal differencing) and 3 (floating point), undone in place after the
byte order is made native, as libtiff and tifffile do.  Every decoded length is
checked against the block's size: a short or long stream is a
:class:`~earthstream.errors.ChunkDecodeError`, never data.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import ChunkDecodeError

__all__ = ["NATIVE_COMPRESSIONS", "BlockDecoder", "native_reason"]


def _decompressors() -> dict[int, Callable[..., Any]]:
    import imagecodecs

    return {
        5: imagecodecs.lzw_decode,
        8: imagecodecs.deflate_decode,  # libdeflate (zlib format)
        32946: imagecodecs.deflate_decode,
        50000: imagecodecs.zstd_decode,
        32773: imagecodecs.packbits_decode,
        34925: imagecodecs.lzma_decode,
    }


#: Compressions decoded here (the rest goes through GDAL, see TiffSource).
NATIVE_COMPRESSIONS = {1: "none", 5: "lzw", 8: "deflate", 32946: "deflate", 50000: "zstd"}
NATIVE_COMPRESSIONS.update({32773: "packbits", 34925: "lzma"})


def native_reason(image: Any) -> str | None:
    """Why ``image`` (a :class:`~earthstream.sources._tiff.TiffImage`) is not decoded here
    (``None``: it is): such images are read through GDAL."""
    if image.compression not in NATIVE_COMPRESSIONS:
        return f"{image.compression_name} compression"
    if image.dtype is None:
        return f"{image.bits}-bit samples of format {image.sample_format}"
    if image.dtype == np.float16:
        return "16-bit floats (GDAL reads them as float32)"
    if image.predictor not in (1, 2, 3):
        return f"predictor {image.predictor}"
    if image.predictor == 3 and image.dtype.kind != "f":
        return "the floating-point predictor on integers"
    if image.predictor == 2 and image.dtype.kind == "f":
        return "horizontal differencing on floats"
    if image.photometric not in (-1, 1, 2, 3):
        return f"photometric interpretation {image.photometric}"
    if image.orientation != 1:
        return f"orientation {image.orientation}"
    if image.depth != 1:
        return "3-D tiles (ImageDepth)"
    return None


class _Scratch(threading.local):
    def __init__(self) -> None:
        self.buf = np.empty(0, dtype=np.uint8)

    def get(self, nbytes: int) -> np.ndarray:
        if self.buf.size < nbytes:
            self.buf = np.empty(nbytes, dtype=np.uint8)
        return self.buf[:nbytes]


class BlockDecoder:
    """Decodes the blocks of one TIFF image into ``(bands, rows, cols)`` slots (thread-safe).

    ``bands`` are the 0-based samples to keep, in slot order (planar files store
    one block per band and get the segments of these bands); ``byteorder`` the
    file's (``"<"`` or ``">"``).
    """

    def __init__(
        self,
        *,
        compression: int,
        predictor: int,
        dtype: np.dtype[Any],
        byteorder: str,
        samples: int,
        planar: int,
        block_shape: tuple[int, int],
        bands: Sequence[int],
    ) -> None:
        self.compression = compression
        self.predictor = predictor
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.stored = np.dtype(byteorder + np.dtype(dtype).str[1:])
        self.native = self.stored.isnative or self.dtype.itemsize == 1
        self.samples = samples
        self.planar = planar
        self.block_shape = block_shape
        self.bands = tuple(int(b) for b in bands)
        self.all_bands = self.bands == tuple(range(samples))
        self._decompress = None if compression == 1 else _decompressors()[compression]
        self._scratch = _Scratch()

    @property
    def segment_samples(self) -> int:
        return self.samples if self.planar == 1 else 1

    def segment_nbytes(self, rows: int) -> int:
        """Decoded bytes of one stored block of ``rows`` rows."""
        return rows * self.block_shape[1] * self.segment_samples * self.dtype.itemsize

    # -- one stored block -> bytes -------------------------------------------------------
    def _inflate(self, data: Any, target: np.ndarray, where: str) -> None:
        """Decompress ``data`` into ``target`` (uint8, exactly the decoded size)."""
        n = target.size
        if self._decompress is None:
            if len(data) < n:
                raise ChunkDecodeError(
                    f"{where}it holds {len(data)} bytes; uncompressed it needs {n}. The file is "
                    "truncated or damaged."
                )
            target[:] = np.frombuffer(data, dtype=np.uint8, count=n)
            return
        if self.compression == 5:  # LZW stops at the end of ``out``: give it room to overrun
            spare = np.empty(n + 1, dtype=np.uint8)
            out = self._decompress(data, out=spare)
            got = len(out)
            if got == n:
                target[:] = spare[:n]
        else:
            out = self._decompress(data, out=target)
            got = len(out)
            if got == n and not np.shares_memory(out, target):  # pragma: no cover
                target[:] = np.frombuffer(out, dtype=np.uint8)
        if got != n:
            raise ChunkDecodeError(
                f"{where}it decoded to {got} bytes, but it holds {n} "
                f"({self.block_shape[1]} columns x {self.segment_samples} samples x "
                f"{self.dtype.itemsize} bytes per row). The file is damaged."
            )

    def _unpredict(self, arr: np.ndarray, where: str) -> np.ndarray:
        """Undo the predictor on ``(rows, cols, samples)``; the result may be a new array
        (imagecodecs' float predictor does not decode in place)."""
        import imagecodecs

        decode = imagecodecs.delta_decode if self.predictor == 2 else imagecodecs.floatpred_decode
        try:
            result = decode(arr, axis=-2, out=arr)
        except Exception as exc:
            raise ChunkDecodeError(
                f"{where}undoing predictor {self.predictor} failed ({exc})."
            ) from exc
        return np.asarray(result)

    def _segment(self, data: Any, rows: int, target: np.ndarray | None, where: str) -> np.ndarray:
        """Decode one stored block to a native ``(rows, cols, segment samples)`` array,
        in ``target``'s memory when given (it must be C-contiguous and large enough)."""
        nbytes = self.segment_nbytes(rows)
        shape = (rows, self.block_shape[1], self.segment_samples)
        direct = target is not None and self.native and self.predictor != 3
        buf = target.reshape(-1).view(np.uint8)[:nbytes] if direct and target is not None else None
        if buf is None:
            buf = self._scratch.get(nbytes)
        try:
            self._inflate(data, buf, where)
        except ChunkDecodeError:
            raise
        except Exception as exc:
            raise ChunkDecodeError(f"{where}{exc}. The file is damaged.") from exc
        arr = buf.view(self.stored).reshape(shape)
        if self.predictor == 3:
            # the float predictor works on the stored bytes: undo it first, then swap
            return self._unpredict(arr, where).astype(self.dtype, copy=False)
        if not self.native:
            arr = arr.byteswap().view(self.dtype)
        if self.predictor == 2:
            arr = self._unpredict(arr, where)
        return arr

    # -- a chunk: every selected band of one block ----------------------------------------
    def decode(
        self,
        segments: Sequence[Any | None],
        rows: int,
        out: np.ndarray,
        fill: Any,
        where: str = "",
    ) -> None:
        """Decode the stored blocks of one chunk into ``out`` ``(bands, block rows, cols)``.

        ``segments`` is one buffer (chunky) or one per selected band (planar);
        ``None`` is a sparse block (not stored): its bands hold ``fill``.  Only the
        first ``rows`` rows are stored (strips); rows past them are left as they are.
        ``where`` prefixes error messages (the caller names the block).
        """
        if self.planar == 2:
            for i, data in enumerate(segments):
                target = out[i, :rows]
                if data is None:
                    target[...] = fill
                    continue
                arr = self._segment(data, rows, target, f"{where}band {self.bands[i] + 1}: ")
                if not np.shares_memory(arr, target):
                    np.copyto(target, arr[:, :, 0])
            return
        (data,) = segments
        if data is None:
            out[:, :rows] = fill
            return
        if self.samples == 1:
            target = out[0, :rows]
            arr = self._segment(data, rows, target, where)
            if not np.shares_memory(arr, target):
                np.copyto(target, arr[:, :, 0])
            return
        arr = self._segment(data, rows, None, where)
        if self.all_bands:
            np.copyto(out[:, :rows], arr.transpose(2, 0, 1))
        else:
            for i, band in enumerate(self.bands):
                np.copyto(out[i, :rows], arr[:, :, band])
