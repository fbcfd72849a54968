"""Malformed Zarr metadata raises MetadataError naming the file and what is wrong
(issue 11, item 7), never a foreign JSONDecodeError/TypeError/ValueError, and an array
without ``shape`` is never reported as "variable not in the store".

Stores are written by zarr-python (v2 and v3, with and without consolidated
metadata), then their metadata files are damaged the way real stores get damaged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import earthstream as es
from earthstream.errors import MetadataError, UnsupportedFormatError, VariableNotFoundError


def write_store(path: Path, zarr_format: int, consolidated: bool) -> Path:
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)  # type: ignore[arg-type]
    names = {"dimension_names": ("time", "x")} if zarr_format == 3 else {}
    arr = group.create_array("t2m", shape=(4, 8), chunks=(2, 8), dtype="f4", **names)
    arr[...] = np.arange(32, dtype="f4").reshape(4, 8)
    time = group.create_array(
        "time",
        shape=(4,),
        chunks=(4,),
        dtype="i8",
        **({"dimension_names": ("time",)} if zarr_format == 3 else {}),
    )
    time[...] = np.arange(4)
    if zarr_format == 2:
        arr.attrs["_ARRAY_DIMENSIONS"] = ["time", "x"]
        time.attrs["_ARRAY_DIMENSIONS"] = ["time"]
    if consolidated:
        zarr.consolidate_metadata(str(path))
    return path


def edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def damage_array(store: Path, zarr_format: int, consolidated: bool, change: Any) -> str:
    """Apply ``change`` to t2m's metadata where zarr-python will read it; the file's name."""
    if not consolidated:
        name = "t2m/zarr.json" if zarr_format == 3 else "t2m/.zarray"
        edit(store / name, change)
        return name
    if zarr_format == 3:
        edit(store / "zarr.json", lambda d: change(d["consolidated_metadata"]["metadata"]["t2m"]))
        return "zarr.json (consolidated metadata of 't2m')"
    edit(store / ".zmetadata", lambda d: change(d["metadata"]["t2m/.zarray"]))
    return ".zmetadata (entry 't2m/.zarray')"


def _pop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.pop(key)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.__setitem__(key, value)


def _bad_codec(zarr_format: int) -> Callable[[dict[str, Any]], None]:
    if zarr_format == 3:
        return lambda d: d["codecs"].append({"name": "nosuchcodec", "configuration": {}})
    return _set("compressor", {"id": "nosuchcodec"})


# (case, change for v2, change for v3, what the message must say)
ARRAY_CASES: list[tuple[str, Any, Any, str]] = [
    (
        "string shape",
        _set("shape", "abc"),
        _set("shape", "abc"),
        r"'shape' must be a list .* 'abc'",
    ),
    ("negative shape", _set("shape", [-4, 8]), _set("shape", [-4, 8]), r"'shape' .*\[-4, 8\]"),
    ("no shape", _pop("shape"), _pop("shape"), r"array without a 'shape'"),
    (
        "bad chunks",
        _set("chunks", [0, 8]),
        lambda d: d["chunk_grid"]["configuration"].__setitem__("chunk_shape", [2]),
        r"chunk shape must be 2 positive integers",
    ),
    ("unknown dtype", _set("dtype", "<f99"), _set("data_type", "float99"), r"data type.*f.*99"),
    ("unknown codec", _bad_codec(2), _bad_codec(3), r"nosuchcodec"),
    ("bad fill value", _set("fill_value", "abc"), _set("fill_value", "abc"), r"abc"),
]


@pytest.mark.parametrize("variables", [None, ["t2m"]], ids=["all", "named"])
@pytest.mark.parametrize("consolidated", [False, True], ids=["plain", "consolidated"])
@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(
    ("case", "v2", "v3", "message"), ARRAY_CASES, ids=[c[0] for c in ARRAY_CASES]
)
def test_damaged_array_metadata(
    tmp_path: Path,
    zarr_format: int,
    consolidated: bool,
    variables: list[str] | None,
    case: str,
    v2: Any,
    v3: Any,
    message: str,
) -> None:
    change = v2 if zarr_format == 2 else v3
    store = write_store(tmp_path / "s.zarr", zarr_format, consolidated)
    where = damage_array(store, zarr_format, consolidated, change)
    with pytest.raises(MetadataError) as info:
        es.open_zarr(store, variables=variables)
    text = str(info.value)
    assert f"s.zarr/{where}" in text  # names the file (and the entry)
    assert re.search(message, text), text
    assert not isinstance(info.value, VariableNotFoundError)
    assert isinstance(info.value, UnsupportedFormatError)
    assert info.value.__context__ is None or isinstance(info.value.__context__, MetadataError)


# (file to break, zarr formats, consolidated)
JSON_CASES = [
    ("zarr.json", 3, False),
    ("zarr.json", 3, True),
    ("t2m/zarr.json", 3, False),
    (".zgroup", 2, False),
    (".zgroup", 2, True),
    (".zmetadata", 2, True),
    ("t2m/.zarray", 2, False),
    ("t2m/.zattrs", 2, False),
    (".zattrs", 2, False),
]


@pytest.mark.parametrize(("name", "zarr_format", "consolidated"), JSON_CASES)
def test_invalid_json_names_the_file(
    tmp_path: Path, name: str, zarr_format: int, consolidated: bool
) -> None:
    store = write_store(tmp_path / "s.zarr", zarr_format, consolidated)
    (store / name).write_text('{"zarr_format": 2, "shape": [4, 8')  # cut off mid-write
    with pytest.raises(MetadataError, match=re.escape(f"s.zarr/{name} is not valid JSON")):
        es.open_zarr(store, variables=["t2m"])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (".zgroup", {"zarr_format": 3}, r"'zarr_format' must be 2"),
        ("zarr.json", {"zarr_format": 3, "node_type": "folder"}, r"'node_type' must be"),
        ("zarr.json", [1, 2], r"must hold a JSON object"),
        (".zmetadata", {"zarr_consolidated_format": 1}, r"no 'metadata' object"),
    ],
)
def test_wrong_documents_are_named(tmp_path: Path, name: str, content: Any, message: str) -> None:
    fmt = 2 if name.startswith(".") else 3
    store = write_store(tmp_path / "s.zarr", fmt, consolidated=name == ".zmetadata")
    (store / name).write_text(json.dumps(content))
    with pytest.raises(MetadataError, match=message):
        es.open_zarr(store)


def test_a_damaged_file_zarr_python_does_not_read_is_harmless(tmp_path: Path) -> None:
    # with consolidated metadata the array's own zarr.json is not read (as in zarr-python)
    store = write_store(tmp_path / "s.zarr", 3, consolidated=True)
    (store / "t2m" / "zarr.json").write_text("{not json")
    source = es.open_zarr(store)
    want = np.arange(32, dtype="f4").reshape(4, 8)[2:4]  # what write_store wrote
    np.testing.assert_array_equal(source.read_chunk("t2m", (1, 0)), want)
