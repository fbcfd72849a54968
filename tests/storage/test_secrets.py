"""No secret in any message, repr, report, log record or warning (issue 11, item 4).

Secrets are planted in every place a user puts them (URL user info, signed-URL
query parameters, secret headers and keys in ``storage_options``), then every
failure mode is provoked through real servers on loopback (nginx behind the
fault proxy, moto S3), and everything a user or a log could see is scanned:
exception messages and reprs along the whole chain (``__cause__``,
``__context__``), formatted tracebacks, reprs of sources and locations, the
report, log records and warnings, and ``earthstream info``.  The requests
themselves must still carry the credentials (checked at the proxy).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import shutil
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import earthstream as es
from earthstream.errors import (
    ChunkDecodeError,
    ConfigError,
    MetadataError,
    MissingChunkError,
    StoreAccessError,
    StoreNotFoundError,
    StoreRequestError,
    VariableNotFoundError,
)
from earthstream.storage import parse_location
from earthstream.storage._secrets import redact
from tests._faults import FaultProxy, MotoS3, moto_s3
from tests._servers import NginxServer, find_nginx, free_port, nginx_server

PASSWORD = "Pw-planted-9f3a"
TOKEN = "tok-planted-77b1"
SIGNATURE = "sig-planted-c0de"
HEADER = "hdr-planted-51d2"
ACCESS_KEY = "AKIDPLANTED0042"
SECRET_KEY = "sk-planted-e1e1"
BASIC = base64.b64encode(f"agent:{PASSWORD}".encode()).decode()
SECRETS = (PASSWORD, TOKEN, SIGNATURE, HEADER, ACCESS_KEY, SECRET_KEY, BASIC)

WINDOW = {"lat": 8, "lon": 8}
FAST = {"base_delay": 0.001, "max_delay": 0.01, "max_attempts": 3, "budget_s": 2.0}


# -- what a user or a log can see -----------------------------------------------------
def exception_texts(exc: BaseException) -> list[str]:
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        texts += [str(item), repr(item), *map(repr, item.args)]
        todo += [item.__cause__, item.__context__]
    return texts


def leaked(*things: Any) -> list[str]:
    texts: list[str] = []
    for thing in things:
        if isinstance(thing, BaseException):
            texts += exception_texts(thing)
        elif isinstance(thing, (list, tuple)):
            texts += [str(t) for t in thing] + [repr(thing)]
        else:
            texts += [str(thing), repr(thing)]
    return [s for s in SECRETS if any(s in t for t in texts)]


@contextlib.contextmanager
def watched(caplog: pytest.LogCaptureFixture) -> Iterator[list[Any]]:
    """Log records (all loggers, DEBUG) and warnings raised inside; yields what to scan."""
    seen: list[Any] = []
    caplog.clear()
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield seen
    for record in caplog.records:
        seen.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            seen.append(record.exc_info[1])
    seen.append(caplog.text)
    seen += [str(w.message) for w in caught]


# -- servers ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("secrets")
    es.datasets.era5_like(
        root / "plain.zarr", n_times=6, n_lat=16, n_lon=16, variables=["t2m", "u10"]
    )
    shutil.copytree(root / "plain.zarr", root / "broken.zarr")
    (root / "broken.zarr" / "zarr.json").write_text("{not json")
    return root


@pytest.fixture(scope="module")
def proxy(served: Path) -> Iterator[FaultProxy]:
    if find_nginx() is None:
        pytest.fail("nginx is not installed; `make test` installs nginx-light.")
    server: NginxServer = nginx_server(served)
    with FaultProxy(server.base_url) as p:
        yield p
    server.stop()


@pytest.fixture
def faults(proxy: FaultProxy) -> Iterator[FaultProxy]:
    proxy.reset()
    yield proxy
    proxy.reset()


def secret_url(proxy: FaultProxy, store: str = "plain.zarr") -> str:
    host = proxy.base_url.split("://", 1)[1]
    return f"http://agent:{PASSWORD}@{host}/{store}?token={TOKEN}&X-Amz-Signature={SIGNATURE}"


OPTIONS = {"headers": {"X-Api-Key": HEADER}, "retry": FAST}


def secret_source(proxy: FaultProxy, store: str = "plain.zarr", **kwargs: Any) -> es.ZarrSource:
    return es.open_zarr(secret_url(proxy, store), storage_options=OPTIONS, **kwargs)


# -- failure modes over HTTP: (name, fault rules, action, expected error) --------------------
def _stream(faults: FaultProxy, **kwargs: Any) -> list[Any]:
    source = secret_source(faults)
    stream = es.Stream(source, WINDOW, batch_size=4, shuffle=False, **kwargs)
    try:
        for _ in stream:
            pass
    finally:
        seen: list[Any] = [repr(source), stream.report, stream.report and stream.report.summary()]
    return seen


def _open_only(faults: FaultProxy, **kwargs: Any) -> list[Any]:
    source = secret_source(faults, **kwargs)
    return [repr(source), source.location]


def _coords(faults: FaultProxy) -> list[Any]:
    source = secret_source(faults)
    return [source.coords]


CHUNK = r"/plain\.zarr/t2m/c/1/0/0\?"
HTTP_CASES: list[tuple[str, list[dict[str, Any]], Callable[..., list[Any]], Any]] = [
    (
        "denied-chunk",
        [{"pattern": CHUNK, "action": "status", "status": 403}],
        _stream,
        StoreAccessError,
    ),
    (
        "5xx-exhausted",
        [{"pattern": CHUNK, "action": "status", "status": 503}],
        _stream,
        StoreRequestError,
    ),
    (
        "missing-error",
        [{"pattern": CHUNK, "action": "status", "status": 404}],
        lambda f: _stream(f, missing="error"),
        MissingChunkError,
    ),
    ("corrupt-error", [{"pattern": CHUNK, "action": "corrupt"}], _stream, ChunkDecodeError),
    (
        "corrupt-skip",
        [{"pattern": CHUNK, "action": "corrupt"}],
        lambda f: _stream(f, corrupt="skip"),
        None,
    ),
    (
        "stalled-chunk",
        [{"pattern": CHUNK, "action": "delay", "seconds": 20}],
        _stream,
        StoreRequestError,
    ),
    (
        "unknown-variable",
        [],
        lambda f: _open_only(f, variables=["t2mm"]),
        VariableNotFoundError,
    ),
    (
        "metadata-5xx",
        [{"pattern": r"/plain\.zarr/zarr\.json", "action": "status", "status": 500}],
        _open_only,
        StoreRequestError,
    ),
    (
        "metadata-denied",
        [{"pattern": r"/plain\.zarr/zarr\.json", "action": "status", "status": 403}],
        _open_only,
        StoreAccessError,
    ),
    (
        "metadata-missing",
        [{"pattern": r"/plain\.zarr/", "action": "status", "status": 404}],
        _open_only,
        StoreNotFoundError,
    ),
    (
        "coordinates-5xx",
        [{"pattern": r"/plain\.zarr/time/c/0\?", "action": "status", "status": 502}],
        _coords,
        StoreRequestError,
    ),
    (
        "connection-reset",
        [{"pattern": r"/plain\.zarr/zarr\.json", "action": "reset"}],
        _open_only,
        StoreRequestError,
    ),
    ("success", [], lambda f: _stream(f, corrupt="skip"), None),
]


@pytest.mark.parametrize(
    ("name", "rules", "action", "error"), HTTP_CASES, ids=[c[0] for c in HTTP_CASES]
)
def test_no_secret_under_http_failures(
    faults: FaultProxy,
    caplog: pytest.LogCaptureFixture,
    name: str,
    rules: list[dict[str, Any]],
    action: Callable[..., list[Any]],
    error: type[Exception] | None,
) -> None:
    for rule in rules:
        faults.add(times=1000, **rule)
    with watched(caplog) as seen:
        if error is None:
            seen += action(faults)
        else:
            with pytest.raises(error) as info:
                action(faults)
            seen.append(info.value)
            # the message still says where: the store's host (redacted URL) or the key
            assert "127.0.0.1" in str(info.value) or "t2m/c/1/0/0" in str(info.value)
    assert leaked(*seen) == []
    if name == "corrupt-skip":
        assert any("t2m/c/1/0/0" in str(s) for s in seen)  # the skipped chunk is named
    # the credentials were still sent: Basic auth from the URL, the signed query
    sent = faults.requests()
    assert sent and all(r.authorization == f"Basic {BASIC}" for r in sent)
    assert all(TOKEN in r.path and SIGNATURE in r.path for r in sent)


def test_no_secret_in_bad_metadata_errors(served: Path, proxy: FaultProxy) -> None:
    with pytest.raises(
        MetadataError, match=r"broken\.zarr/zarr\.json\?\S* is not valid JSON"
    ) as info:
        secret_source(proxy, "broken.zarr")
    assert leaked(info.value) == []


def test_no_secret_when_nothing_listens() -> None:
    url = f"http://agent:{PASSWORD}@127.0.0.1:{free_port()}/x.zarr?sig={SIGNATURE}"
    with pytest.raises(StoreRequestError, match=r"127\.0\.0\.1") as info:
        es.open_zarr(url, storage_options={"retry": {**FAST, "max_attempts": 1}})
    assert leaked(info.value) == []


def test_no_secret_in_config_errors() -> None:
    with pytest.raises(ConfigError, match="'bogus'") as info:
        es.open_zarr(
            f"http://agent:{PASSWORD}@host/x.zarr",
            storage_options={"headers": {"Authorization": f"Bearer {HEADER}"}, "bogus": 1},
        )
    assert leaked(info.value) == []
    with pytest.raises(ConfigError) as info:
        es.open_zarr(f"ftp://agent:{PASSWORD}@host/x.zarr?sig={SIGNATURE}")
    assert leaked(info.value) == []


def test_no_secret_in_earthstream_info(proxy: FaultProxy, capsys: pytest.CaptureFixture) -> None:
    from earthstream.cli import main

    assert main(["info", secret_url(proxy)]) == 0
    out = capsys.readouterr()
    assert "t2m" in out.out and "***" in out.out
    assert leaked(out.out, out.err) == []


# -- S3 (moto): keys in storage_options ---------------------------------------------------
@pytest.fixture(scope="module")
def s3(served: Path) -> Iterator[MotoS3]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_s3()
    server.create_bucket("secrets")
    server.upload("secrets", "plain.zarr", served / "plain.zarr")
    yield server
    server.stop()


def s3_options(server: MotoS3) -> dict[str, Any]:
    return {
        "key": ACCESS_KEY,
        "secret": SECRET_KEY,
        "endpoint_url": server.endpoint,
        "client_kwargs": {"region_name": "us-east-1"},
        "retry": FAST,
    }


def test_no_secret_with_s3_keys(s3: MotoS3, caplog: pytest.LogCaptureFixture) -> None:
    with watched(caplog) as seen:
        source = es.open_zarr("s3://secrets/plain.zarr", storage_options=s3_options(s3))
        seen += [repr(source), source.location]
        stream = es.Stream(source, WINDOW, batch_size=8)
        seen.append(sum(b.size for b in stream))
        seen += [stream.report, stream.report and stream.report.summary()]
        for call, error in [
            (
                lambda: es.open_zarr("s3://secrets/nothing.zarr", storage_options=s3_options(s3)),
                StoreNotFoundError,
            ),
            (
                lambda: es.open_zarr(
                    "s3://secrets/plain.zarr", variables=["nope"], storage_options=s3_options(s3)
                ),
                VariableNotFoundError,
            ),
        ]:
            with pytest.raises(error) as info:
                call()
            seen.append(info.value)
    assert leaked(*seen) == []
    assert ACCESS_KEY in dict(source.location.options).values()  # kept for requests


# -- the pieces, one by one ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "options"),
    [
        (f"https://agent:{PASSWORD}@host/x.zarr", {}),
        (f"https://host/x.zarr?token={TOKEN}&X-Amz-Signature={SIGNATURE}", {}),
        (
            f"https://host/x.zarr?X-Amz-Credential={ACCESS_KEY}&X-Amz-Security-Token={TOKEN}"
            f"&Signature={SIGNATURE}",
            {},
        ),
        (f"https://acct.blob.core.windows.net/c/x.zarr?sv=2022&se=2030&sp=r&sig={SIGNATURE}", {}),
        ("s3://bucket/x.zarr", {"key": ACCESS_KEY, "secret": SECRET_KEY, "token": TOKEN}),
        ("gs://bucket/x.zarr", {"bearer_token": TOKEN}),
        ("az://c/x.zarr", {"account_name": "acct", "account_key": SECRET_KEY}),
        ("az://c/x.zarr", {"account_name": "acct", "credential": f"sv=1&sig={SIGNATURE}"}),
        (
            "https://host/x.zarr",
            {"client_kwargs": {"headers": {"Authorization": f"Bearer {TOKEN}"}}},
        ),
    ],
)
def test_locations_show_no_secret(url: str, options: dict[str, Any]) -> None:
    location = parse_location(url, options)
    shown = [repr(location), str(location), location.display, location.redact(f"GET {url}")]
    assert leaked(*shown) == []
    # child locations keep the query at the end (signed URLs stay valid)
    child = location.child("t2m/zarr.json")
    assert child.url.split("?")[0].endswith("/t2m/zarr.json")
    assert leaked(repr(child)) == []


@pytest.mark.parametrize(
    "text",
    [
        f"GET https://u:{PASSWORD}@h/x?sig={SIGNATURE}&comp=list",
        f"Authorization: Bearer {TOKEN}",
        f"{{'secret_access_key': '{SECRET_KEY}', 'region': 'eu'}}",
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20240101/eu/s3/aws4_request, "
        f"Signature={SIGNATURE}",
        f"https://h/x?X-Amz-Security-Token={TOKEN}&X-Amz-Credential={ACCESS_KEY}%2F2024",
        f"password={PASSWORD}; token: {TOKEN}",
    ],
)
def test_redact_by_shape(text: str) -> None:
    assert leaked(redact(text)) == []


def test_redact_by_value_and_encoding() -> None:
    secret = "p@ss word/+="
    text = f"the server echoed {secret} (in a URL: p%40ss%20word%2F%2B%3D)"
    out = redact(text, [secret])
    assert secret not in out and "p%40ss%20word%2F%2B%3D" not in out
