"""Metadata, consolidated metadata, coordinate and zarr-python fallback reads obey the
retry settings: the same policy, budget, per-request timeout and error classes as chunk
reads (issue 11, item 5).

Faults are injected by the fault proxy in front of a real nginx; requests are
counted where they arrive (the proxy's rules count hits as requests come in, so a
stalled request is counted too).  The data oracle is zarr-python reading the
same store from disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import earthstream as es
from earthstream.errors import StoreAccessError, StoreRequestError
from tests._faults import FaultProxy
from tests._servers import NginxServer, find_nginx, nginx_server

BUDGET_S = 2.0
RETRY = {"retry": {"max_attempts": 2, "budget_s": BUDGET_S, "base_delay": 0.01}}
#: time for one open beyond the budget: local requests, thread start-up, a loaded machine
SLACK_S = 3.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("meta")
    es.datasets.era5_like(root / "v3.zarr", n_times=4, n_lat=8, n_lon=16, variables=["t2m"])
    es.datasets.era5_like(
        root / "v2.zarr", n_times=4, n_lat=8, n_lon=16, variables=["t2m"], zarr_format=2
    )
    from zarr.codecs.numcodecs import Quantize

    data = np.linspace(0, 1, 6 * 8, dtype="f8").reshape(6, 8)
    group = zarr.open_group(str(root / "quantized.zarr"), mode="w", zarr_format=3)
    arr = group.create_array(
        "q",
        shape=data.shape,
        chunks=(4, 4),
        dtype="f8",
        filters=[Quantize(digits=3, dtype="f8")],
        dimension_names=("y", "x"),
    )
    arr[...] = data
    zarr.consolidate_metadata(str(root / "quantized.zarr"))
    return root


@pytest.fixture(scope="module")
def nginx(served: Path) -> Iterator[NginxServer]:
    if find_nginx() is None:
        pytest.fail("nginx is not installed; `make test` installs nginx-light.")
    server = nginx_server(served)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(nginx: NginxServer) -> Iterator[FaultProxy]:
    with FaultProxy(nginx.base_url) as p:
        yield p


@pytest.fixture
def faults(proxy: FaultProxy) -> Iterator[FaultProxy]:
    proxy.reset()
    yield proxy
    proxy.reset()


def _open(faults: FaultProxy, store: str) -> es.ZarrSource:
    return es.open_zarr(f"{faults.base_url}/{store}", storage_options=RETRY)


def _coords(faults: FaultProxy, store: str) -> Any:
    return _open(faults, store).coords


# (store, key pattern, fault, what to run, expected error, requests that reach the key)
CASES = [
    (
        "v3.zarr",
        r"/v3\.zarr/zarr\.json$",
        {"action": "status", "status": 500},
        _open,
        StoreRequestError,
        2,
    ),
    (
        "v2.zarr",
        r"/v2\.zarr/\.zmetadata$",
        {"action": "status", "status": 500},
        _open,
        StoreRequestError,
        2,
    ),
    ("v2.zarr", r"/v2\.zarr/t2m/\.zarray$", {"action": "status", "status": 503}, _open, None, 0),
    (
        "v3.zarr",
        r"/v3\.zarr/zarr\.json$",
        {"action": "status", "status": 403},
        _open,
        StoreAccessError,
        1,
    ),
    (
        "v2.zarr",
        r"/v2\.zarr/\.zmetadata$",
        {"action": "status", "status": 401},
        _open,
        StoreAccessError,
        1,
    ),
    (
        "v3.zarr",
        r"/v3\.zarr/zarr\.json$",
        {"action": "delay", "seconds": 30},
        _open,
        StoreRequestError,
        1,
    ),
    ("v3.zarr", r"/v3\.zarr/zarr\.json$", {"action": "reset"}, _open, StoreRequestError, 2),
    (
        "v3.zarr",
        r"/v3\.zarr/time/c/0$",
        {"action": "status", "status": 500},
        _coords,
        StoreRequestError,
        2,
    ),
    (
        "v2.zarr",
        r"/v2\.zarr/lat/0$",
        {"action": "status", "status": 500},
        _coords,
        StoreRequestError,
        2,
    ),
    (
        "v3.zarr",
        r"/v3\.zarr/lat/c/0$",
        {"action": "status", "status": 403},
        _coords,
        StoreAccessError,
        1,
    ),
    (
        "v3.zarr",
        r"/v3\.zarr/time/c/0$",
        {"action": "delay", "seconds": 30},
        _coords,
        StoreRequestError,
        1,
    ),
]


@pytest.mark.parametrize(
    ("store", "pattern", "fault", "run", "error", "hits"),
    CASES,
    ids=[
        f"{c[0]}-{c[1].split('/')[-1].rstrip('$')}-{c[2].get('status', c[2]['action'])}"
        f"-{c[3].__name__}"
        for c in CASES
    ],
)
def test_metadata_and_coordinate_faults(
    faults: FaultProxy,
    store: str,
    pattern: str,
    fault: dict[str, Any],
    run: Any,
    error: type[Exception] | None,
    hits: int,
) -> None:
    rule = faults.add(pattern, times=1000, **fault)
    started = time.monotonic()
    if error is None:  # a key zarr-python does not read (consolidated metadata): no effect
        run(faults, store)
    else:
        with pytest.raises(error) as info:
            run(faults, store)
        key = pattern.split("/", 2)[-1].replace("\\", "").rstrip("$")
        assert key in str(info.value)  # the message names the key that failed
        assert info.value.__context__ is None and info.value.__cause__ is None
    elapsed = time.monotonic() - started
    assert rule.hits == hits  # counted as requests arrive, stalled ones too
    assert elapsed < BUDGET_S + SLACK_S, elapsed  # never obstore's 10 retries or 180 s


def test_a_transient_metadata_fault_is_retried_once(served: Path, faults: FaultProxy) -> None:
    keys = ("/v3.zarr/zarr.json", "/v3.zarr/time/c/0")

    def counts() -> list[int]:
        return [len(faults.requests(lambda r, k=k: r.path.endswith(k))) for k in keys]

    _open(faults, "v3.zarr").coords  # noqa: B018 - how many requests a clean open costs
    clean = counts()
    faults.reset()
    faults.add(r"/v3\.zarr/zarr\.json$", "status", status=503, times=1)
    faults.add(r"/v3\.zarr/time/c/0$", "reset", times=1)
    source = _open(faults, "v3.zarr")
    local = es.open_zarr(served / "v3.zarr")
    np.testing.assert_array_equal(source.coords["time"], local.coords["time"])
    assert counts() == [n + 1 for n in clean]  # each fault retried once, then success


@pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3")
def test_zarr_python_fallback_reads_obey_the_policy(served: Path, faults: FaultProxy) -> None:
    source = _open(faults, "quantized.zarr")
    assert not source.specs["q"].fast  # Quantize: read through zarr-python
    want = zarr.open_array(str(served / "quantized.zarr"), path="q", mode="r")[4:6, 4:8]
    faults.add(r"/quantized\.zarr/q/c/1/1$", "status", status=503, times=1)
    np.testing.assert_array_equal(source.read_chunk("q", (1, 1)), want)
    hits = faults.requests(lambda r: r.path.endswith("/quantized.zarr/q/c/1/1"))
    assert [r.status for r in hits] == [503, 200]  # retried once by earthstream
    stuck = faults.add(r"/quantized\.zarr/q/c/0/1$", "status", status=500, times=1000)
    started = time.monotonic()
    with pytest.raises(StoreRequestError, match=r"q/c/0/1.*failed after 2 attempts"):
        source.read_chunk("q", (0, 1))
    assert stuck.hits == 2 and time.monotonic() - started < BUDGET_S + SLACK_S
    denied = faults.add(r"/quantized\.zarr/q/c/1/0$", "status", status=403, times=1000)
    with pytest.raises(StoreAccessError, match=r"q/c/1/0"):
        source.read_chunk("q", (1, 0))
    assert denied.hits == 1


def test_metadata_requests_are_counted_by_the_reader(faults: FaultProxy) -> None:
    source = _open(faults, "v3.zarr")
    before = source.request_stats()["requests"]
    source.coords  # noqa: B018 - reads the coordinate arrays
    after = source.request_stats()
    assert after["requests"] > before  # coordinate reads go through the source's reader
    assert after["failures"] == {}
