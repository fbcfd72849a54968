"""Remote stores through real servers on loopback: nginx (HTTP Range), moto (S3),
and a fault-injecting proxy in front of nginx."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import earthstream as es
from earthstream.errors import (
    ChunkDecodeError,
    CorruptChunksError,
    MissingChunkError,
    StoreAccessError,
    StoreRequestError,
    UnsupportedFormatError,
)
from tests._faults import FaultProxy, MotoS3, moto_s3
from tests._servers import NginxServer, find_nginx, nginx_server

WINDOW = {"lat": 8, "lon": 8}
FAST_RETRY = {"retry": {"base_delay": 0.001, "max_delay": 0.01, "max_attempts": 6}}
HTTP = {"client_options": {"allow_http": True}, **FAST_RETRY}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served")
    es.datasets.era5_like(
        root / "plain.zarr", n_times=6, n_lat=16, n_lon=32, variables=["t2m", "u10"]
    )
    es.datasets.era5_like(
        root / "sharded.zarr",
        n_times=8,
        n_lat=16,
        n_lon=32,
        variables=["t2m"],
        chunks={"time": 1, "lat": 8, "lon": 16},
        shards={"time": 4, "lat": 16, "lon": 32},
    )
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


@pytest.fixture(scope="module")
def s3(served: Path) -> Iterator[MotoS3]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_s3()
    server.create_bucket("earthstream-test")
    server.upload("earthstream-test", "plain.zarr", served / "plain.zarr")
    yield server
    server.stop()


def epoch(stream: es.Stream) -> dict[int, dict[str, np.ndarray]]:
    out = {}
    for batch in stream:
        for i, wid in enumerate(batch.window_ids.tolist()):
            out[wid] = {name: batch[name][i].copy() for name in batch}
    return out


def assert_same_epoch(remote: es.Stream, local: es.Stream) -> None:
    got, want = epoch(remote), epoch(local)
    assert got.keys() == want.keys() and len(got) == remote.n_windows
    for wid, sample in want.items():
        for name, values in sample.items():
            np.testing.assert_array_equal(got[wid][name], values)


def test_http_equals_local(served: Path, nginx: NginxServer) -> None:
    local = es.Stream(served / "plain.zarr", WINDOW, seed=3, batch_size=5)
    remote = es.Stream(
        es.open_zarr(f"{nginx.base_url}/plain.zarr", storage_options=HTTP),
        WINDOW,
        seed=3,
        batch_size=5,
    )
    assert_same_epoch(remote, local)
    report = remote.report
    assert report is not None and report.requests >= 2 * 6 and report.retries == 0
    assert report.bytes_read > 0 and not report.failures


def test_sharded_over_http_reads_index_then_merged_inner_chunks(
    served: Path, nginx: NginxServer
) -> None:
    local = es.Stream(served / "sharded.zarr", WINDOW, shuffle=False, batch_size=8)
    nginx.clear_log()
    remote = es.Stream(
        es.open_zarr(f"{nginx.base_url}/sharded.zarr", storage_options=HTTP),
        WINDOW,
        shuffle=False,
        batch_size=8,
    )
    assert_same_epoch(remote, local)
    chunk_requests = [r for r in nginx.requests("/sharded.zarr/t2m/c/") if r.method == "GET"]
    shards = {r.path for r in chunk_requests}
    assert len(shards) == 2  # two shards of 4 x 2 x 2 inner chunks
    inner_chunks = 8 * 2 * 2
    # one index read per shard, then fewer requests than inner chunks (ranges merged)
    assert len(chunk_requests) < inner_chunks
    assert all(r.status == 206 for r in chunk_requests)


def test_s3_equals_local(served: Path, s3: MotoS3) -> None:
    local = es.Stream(served / "plain.zarr", WINDOW, seed=1, batch_size=7, shuffle="full")
    source = es.open_zarr(
        "s3://earthstream-test/plain.zarr", storage_options={**s3.options(), **FAST_RETRY}
    )
    remote = es.Stream(source, WINDOW, seed=1, batch_size=7, shuffle="full")
    assert_same_epoch(remote, local)
    assert "testing" not in repr(source.location)  # credentials stay out of reprs


def test_requests_are_in_flight_together(served: Path, faults: FaultProxy) -> None:
    faults.set_delay(0.05)
    source = es.open_zarr(f"{faults.base_url}/plain.zarr", storage_options=HTTP)
    stream = es.Stream(source, WINDOW, batch_size=64)
    assert sum(b.size for b in stream) == stream.n_windows
    assert faults.max_in_flight >= 8  # latency hidden by concurrency, not paid serially


@pytest.mark.parametrize(
    ("action", "kwargs", "kind"),
    [
        ("status", {"status": 503, "times": 3}, "server"),
        ("status", {"status": 429, "times": 2}, "throttled"),
        ("reset", {"times": 2}, "connection"),
        ("truncate", {"times": 2}, "truncated"),
    ],
)
def test_transient_faults_are_retried(
    served: Path, faults: FaultProxy, action: str, kwargs: dict, kind: str
) -> None:
    faults.add(r"/plain\.zarr/t2m/c/2/0/0$", action, **kwargs)
    remote = es.Stream(
        es.open_zarr(f"{faults.base_url}/plain.zarr", storage_options=HTTP), WINDOW, seed=2
    )
    assert_same_epoch(remote, es.Stream(served / "plain.zarr", WINDOW, seed=2))
    hits = faults.requests(lambda r: r.path.endswith("/t2m/c/2/0/0"))
    assert len(hits) == kwargs["times"] + 1  # every fault retried, then one success
    report = remote.report
    assert report is not None
    assert report.retries == kwargs["times"]
    assert report.failures == {kind: kwargs["times"]}


def test_truncated_ranges_never_become_data(served: Path, nginx: NginxServer) -> None:
    with FaultProxy(nginx.base_url) as proxy:
        proxy.add(r"/sharded\.zarr/t2m/c/", "truncate", times=3)
        remote = es.Stream(
            es.open_zarr(f"{proxy.base_url}/sharded.zarr", storage_options=HTTP), WINDOW
        )
        assert_same_epoch(remote, es.Stream(served / "sharded.zarr", WINDOW))
        assert remote.report is not None and remote.report.retries == 3


@pytest.mark.parametrize("status", [403, 400])
def test_client_errors_fail_at_once(faults: FaultProxy, status: int) -> None:
    faults.add(r"/t2m/c/1/0/0$", "status", status=status, times=100)
    stream = es.Stream(
        es.open_zarr(f"{faults.base_url}/plain.zarr", storage_options=HTTP), WINDOW, shuffle=False
    )
    error = StoreAccessError if status == 403 else StoreRequestError
    with pytest.raises(error, match=r"plain\.zarr/t2m/c/1/0/0") as info:
        list(stream)
    assert "cannot succeed by retrying" in str(info.value) or status == 403
    assert len(faults.requests(lambda r: r.path.endswith("/t2m/c/1/0/0"))) == 1


def test_retry_budget_ends_in_a_typed_error(faults: FaultProxy) -> None:
    faults.add(r"/t2m/c/0/0/0$", "status", status=503, times=1000)
    stream = es.Stream(
        es.open_zarr(f"{faults.base_url}/plain.zarr", storage_options=HTTP), WINDOW, shuffle=False
    )
    with pytest.raises(StoreRequestError, match=r"failed after 6 attempts.*HTTP 503") as info:
        list(stream)
    assert "retry" in str(info.value)
    assert len(faults.requests(lambda r: r.path.endswith("/t2m/c/0/0/0"))) == 6


def test_missing_chunk_policy(served: Path, nginx: NginxServer, tmp_path: Path) -> None:
    holes = served / "holes.zarr"
    if not holes.exists():
        shutil.copytree(served / "plain.zarr", holes)
        (holes / "t2m" / "c" / "3" / "0" / "0").unlink()
    url = f"{nginx.base_url}/holes.zarr"
    filled = es.Stream(es.open_zarr(url, storage_options=HTTP), WINDOW, variables="t2m")
    nginx.clear_log()
    values = epoch(filled)
    assert filled.report is not None and filled.report.chunks_missing == 1
    missing = [v["t2m"] for wid, v in values.items() if np.isnan(v["t2m"]).all()]
    assert len(missing) == 2 * 4  # the 8 windows of time step 3: fill value (NaN)
    assert len(nginx.requests("/holes.zarr/t2m/c/3/0/0")) == 1  # a 404 costs one request
    strict = es.Stream(
        es.open_zarr(url, storage_options=HTTP), WINDOW, variables="t2m", missing="error"
    )
    with pytest.raises(MissingChunkError, match=r"holes\.zarr/t2m/c/3/0/0.*missing='fill'"):
        list(strict)


def test_corrupt_chunks_skip_policy(served: Path, faults: FaultProxy) -> None:
    corrupt = {"t2m/c/1/0/0", "u10/c/4/0/0"}
    for key in corrupt:
        faults.add(rf"/plain\.zarr/{key}$", "corrupt", times=10)
    source = es.open_zarr(f"{faults.base_url}/plain.zarr", storage_options=HTTP)
    stream = es.Stream(source, WINDOW, corrupt="skip", batch_size=6, seed=5)
    got = epoch(stream)
    want = epoch(es.Stream(served / "plain.zarr", WINDOW, batch_size=6, seed=5))
    report = stream.report
    assert report is not None
    assert {c.split("plain.zarr/")[1] for c in report.corrupt_chunks} == corrupt
    dropped = set(want) - set(got)
    starts = es.Stream(served / "plain.zarr", WINDOW).layout.grid.starts_of(
        np.array(sorted(dropped))
    )
    assert sorted(set(starts[:, 0].tolist())) == [1, 4]  # exactly the windows of those chunks
    assert report.samples_dropped == len(dropped) == 2 * 8
    for wid, sample in got.items():
        for name, values in sample.items():
            np.testing.assert_array_equal(values, want[wid][name])
    # the default policy raises, naming the chunk
    faults.reset()
    faults.add(r"/plain\.zarr/t2m/c/1/0/0$", "corrupt", times=10)
    strict = es.Stream(es.open_zarr(f"{faults.base_url}/plain.zarr", storage_options=HTTP), WINDOW)
    with pytest.raises(ChunkDecodeError, match=r"t2m/c/1/0/0"):
        list(strict)


def test_corrupt_chunks_abort_threshold(faults: FaultProxy) -> None:
    faults.add(r"/plain\.zarr/t2m/c/[0-3]/0/0$", "corrupt", times=100)
    stream = es.Stream(
        es.open_zarr(f"{faults.base_url}/plain.zarr", storage_options=HTTP),
        WINDOW,
        corrupt="skip",
        max_corrupt=2,
        shuffle=False,
    )
    with pytest.raises(CorruptChunksError, match=r"more than max_corrupt=2"):
        list(stream)


def test_http_without_consolidated_metadata(served: Path, nginx: NginxServer) -> None:
    bare = served / "bare.zarr"
    if not bare.exists():
        es.datasets.era5_like(bare, n_times=3, n_lat=8, n_lon=16, variables=["t2m"])
        meta = bare / "zarr.json"
        import json

        doc = json.loads(meta.read_text())
        doc.pop("consolidated_metadata", None)
        meta.write_text(json.dumps(doc))
    url = f"{nginx.base_url}/bare.zarr"
    with pytest.raises(UnsupportedFormatError, match=r"consolidate.*variables=\[\.\.\.\]"):
        es.open_zarr(url, storage_options=HTTP)
    source = es.open_zarr(url, variables=["t2m"], storage_options=HTTP)
    assert source.variables["t2m"].shape == (3, 8, 16)
    assert list(source.coords) == ["time", "lat", "lon"]


@pytest.mark.parametrize("context", [None, "spawn", "forkserver"])
def test_dataloader_workers_each_open_their_client(
    served: Path, nginx: NginxServer, context: str | None
) -> None:
    source = es.open_zarr(f"{nginx.base_url}/plain.zarr", storage_options=HTTP)
    source.read_chunk("t2m", (0, 0, 0))  # the parent has a live client; workers must not share it
    stream = es.Stream(source, WINDOW, batch_size=4)
    kwargs = {"multiprocessing_context": context} if context else {}  # default: spawn
    ids = [
        i
        for b in stream.to_torch().loader(num_workers=2, timeout=120, **kwargs)
        for i in b.window_ids.tolist()
    ]
    assert sorted(ids) == list(range(stream.n_windows))


def test_forked_workers_fail_clearly_instead_of_hanging(nginx: NginxServer) -> None:
    source = es.open_zarr(f"{nginx.base_url}/plain.zarr", storage_options=HTTP)
    source.read_chunk("t2m", (0, 0, 0))
    stream = es.Stream(source, WINDOW, batch_size=4)
    loader = stream.to_torch().loader(num_workers=1, multiprocessing_context="fork", timeout=60)
    with pytest.raises(es.errors.ForkError, match=r"multiprocessing_context='spawn'"):
        list(loader)
