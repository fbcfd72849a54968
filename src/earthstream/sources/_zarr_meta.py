"""Zarr metadata checked where it is read: every bad document names its file.

zarr-python meets a damaged metadata document with foreign exceptions that do
not say which file is wrong (``JSONDecodeError``, ``TypeError: Expected an
iterable of integers``), and an array document without ``shape`` makes it treat
the array as a group, so the variable looks absent.  :class:`CheckedStore` sits
between zarr-python and the store: each metadata document (``zarr.json``,
``.zarray``, ``.zgroup``, ``.zattrs``, ``.zmetadata``, and the arrays inside
consolidated metadata) is checked as it is read, and a bad one raises
:class:`~earthstream.errors.MetadataError` naming the file and what is wrong.
:func:`call_zarr` turns whatever else zarr-python raises into typed, redacted
errors.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

from ..errors import EarthstreamError, MetadataError, UnsupportedFormatError
from ..storage import StoreLocation
from ..storage._location import join_key
from ..storage._zarr_store import StoreHandle

__all__ = ["METADATA_KEYS", "CheckedStore", "call_zarr", "check_document"]

T = TypeVar("T")

#: Names of the files that hold Zarr metadata (v3 and v2).
METADATA_KEYS = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")


class CheckedStore(WrapperStore[Store]):
    """A read-only store whose metadata documents are checked as they are read.

    ``name`` (a redacted URL or path) is what messages, ``str`` and ``repr`` show.
    """

    def __init__(self, store: Store, name: str = "") -> None:
        super().__init__(store)
        self.name = name or str(store)

    def _with_store(self, store: Store) -> CheckedStore:
        return CheckedStore(store, self.name)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"CheckedStore({self.name!r})"

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        value = await self._store.get(key, prototype, byte_range)
        if value is not None and byte_range is None and key.rsplit("/", 1)[-1] in METADATA_KEYS:
            check_document(key, value.to_bytes(), join_key(self.name, key))
        return value


def check_document(key: str, data: bytes, where: str) -> None:
    """Raise :class:`MetadataError` if the metadata document ``key`` is not valid.

    ``where`` names the file in messages.

    >>> check_document(".zarray", b'{"shape": "abc"}', "s.zarr/t2m/.zarray")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    earthstream.errors.MetadataError: s.zarr/t2m/.zarray: 'shape' must be a list of ... not 'abc'...
    """
    name = key.rsplit("/", 1)[-1]
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = (
            f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else "not UTF-8 text"
        )
        problem = f"is not valid JSON ({detail})"
    else:
        problem = ""
    if problem:
        raise MetadataError(f"{where} {problem}. {_FIX[name]}")
    if not isinstance(doc, dict):
        raise MetadataError(
            f"{where} must hold a JSON object, not {type(doc).__name__}. {_FIX[name]}"
        )
    if name == "zarr.json":
        _check_v3_node(doc, where)
    elif name == ".zarray":
        _check_array(doc, where, 2)
    elif name == ".zgroup":
        if doc.get("zarr_format") != 2:
            raise MetadataError(
                f"{where}: 'zarr_format' must be 2, not {doc.get('zarr_format')!r}. {_FIX[name]}"
            )
    elif name == ".zmetadata":
        members = doc.get("metadata")
        if not isinstance(members, dict):
            raise MetadataError(f"{where} has no 'metadata' object. {_FIX[name]}")
        for member, value in members.items():
            inner = f"{where} (entry {member!r})"
            if not isinstance(value, dict):
                raise MetadataError(f"{inner} must be a JSON object. {_FIX[name]}")
            if member.rsplit("/", 1)[-1] == ".zarray":
                _check_array(value, inner, 2)


_FIX = {
    "zarr.json": "Rewrite the node's metadata (e.g. with zarr-python) or restore the file.",
    ".zarray": "Rewrite the array's metadata (e.g. with zarr-python) or restore the file.",
    ".zgroup": "Rewrite the group's metadata (e.g. with zarr-python) or restore the file.",
    ".zattrs": "Rewrite the attributes (valid JSON) or restore the file.",
    ".zmetadata": "Consolidate the metadata again (zarr.consolidate_metadata) or remove "
    ".zmetadata.",
}


def _check_v3_node(doc: dict[str, Any], where: str) -> None:
    fix = _FIX["zarr.json"]
    if doc.get("zarr_format") != 3:
        raise MetadataError(
            f"{where}: 'zarr_format' must be 3, not {doc.get('zarr_format')!r}. {fix}"
        )
    kind = doc.get("node_type")
    if kind == "array":
        _check_array(doc, where, 3)
    elif kind == "group":
        consolidated = doc.get("consolidated_metadata")
        if isinstance(consolidated, dict) and isinstance(consolidated.get("metadata"), dict):
            for member, value in consolidated["metadata"].items():
                inner = f"{where} (consolidated metadata of {member!r})"
                if not isinstance(value, dict):
                    raise MetadataError(f"{inner} must be a JSON object. {fix}")
                if value.get("node_type") == "array":
                    _check_array(value, inner, 3)
    else:
        raise MetadataError(f"{where}: 'node_type' must be 'array' or 'group', not {kind!r}. {fix}")


def _is_shape(value: Any, minimum: int) -> bool:
    return isinstance(value, list) and all(
        isinstance(n, int) and not isinstance(n, bool) and n >= minimum for n in value
    )


def _check_array(doc: Mapping[str, Any], where: str, zarr_format: int) -> None:
    fix = _FIX["zarr.json" if zarr_format == 3 else ".zarray"]
    if "shape" not in doc:
        raise MetadataError(f"{where} describes an array without a 'shape'. {fix}")
    shape = doc["shape"]
    if not _is_shape(shape, 0):
        raise MetadataError(
            f"{where}: 'shape' must be a list of non-negative integers, not {shape!r}. {fix}"
        )
    if zarr_format == 2:
        chunks = doc.get("chunks")
    else:
        grid = doc.get("chunk_grid")
        config = grid.get("configuration") if isinstance(grid, dict) else None
        chunks = config.get("chunk_shape") if isinstance(config, dict) else None
    if chunks is not None and not (_is_shape(chunks, 1) and len(chunks) == len(shape)):
        raise MetadataError(
            f"{where}: the chunk shape must be {len(shape)} positive integers (one per "
            f"dimension of shape {shape}), not {chunks!r}. {fix}"
        )
    from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata

    parse = ArrayV3Metadata.from_dict if zarr_format == 3 else ArrayV2Metadata.from_dict
    problem = ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr-python warns again when it opens the array
        try:
            parse(copy.deepcopy(dict(doc)))
        except Exception as exc:  # zarr-python's own check: dtype, codecs, fill value ...
            problem = f"{type(exc).__name__}: {exc}"
    if problem:
        raise MetadataError(
            f"{where} does not describe a valid Zarr v{zarr_format} array ({problem}). {fix}"
        )


def call_zarr(
    fn: Callable[[], T],
    location: StoreLocation | StoreHandle,
    what: str,
    passthrough: tuple[type[BaseException], ...] = (),
    error: type[EarthstreamError] = UnsupportedFormatError,
) -> T:
    """Run a zarr-python call; what it raises arrives typed and redacted.

    earthstream's own errors (from the store: request failures, bad metadata)
    and the ``passthrough`` classes (which the caller handles) pass through.
    Anything else zarr-python raises becomes ``error`` (default
    :class:`UnsupportedFormatError`) naming ``what`` and the store, with the
    original type and (redacted) message, and no chained exception (which could
    carry an unredacted URL).
    """
    problem: Exception | None = None
    try:
        return fn()
    except EarthstreamError:
        raise
    except Exception as exc:
        if isinstance(exc, passthrough):
            raise
        problem = exc
    detail = location.redact(f"{type(problem).__name__}: {problem}")
    del problem
    hint = (
        "Check that the metadata was written by a Zarr v2/v3 writer."
        if error is UnsupportedFormatError
        else "Check the store."
    )
    raise error(
        f"zarr-python could not read {what} of the store at {location.display} ({detail}). {hint}"
    )
