"""storage_options in the spellings people already write (fsspec: s3fs, gcsfs, adlfs,
HTTPFileSystem; obstore's own names and aliases) reach obstore under obstore's names.

The oracle is the store obstore actually built: its ``config`` and
``client_options`` (obstore reports what it parsed), and for S3 a real read
against moto on loopback with the fsspec spellings, compared with a local read.
Unknown keys give ``ConfigError`` naming them; no spelling or value makes the
client panic (a hypothesis property over keys and values).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import earthstream as es
from earthstream.errors import ConfigError
from earthstream.storage import parse_location
from earthstream.storage._options import accepted_keys
from earthstream.storage._readers import make_object_store
from tests._faults import MotoS3, moto_s3

S3 = "s3://bucket/era5.zarr"
GS = "gs://bucket/era5.zarr"
AZ = "az://container/era5.zarr"
HTTP = "https://example.org/era5.zarr"


@pytest.fixture(scope="module")
def service_account(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A service-account key (a real RSA key, for no real account): obstore parses it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "kid",
        "private_key": pem,
        "client_email": "reader@p.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


@pytest.fixture(scope="module")
def service_account_file(
    tmp_path_factory: pytest.TempPathFactory, service_account: dict[str, str]
) -> str:
    path = tmp_path_factory.mktemp("gcs") / "sa.json"
    path.write_text(json.dumps(service_account))
    return str(path)


def _fill(value: Any, sa_file: str) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, sa_file) for k, v in value.items()}
    return sa_file if value == "{sa}" else value


def built(url: str, options: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """obstore's view of the store it built: (config, client_options)."""
    store = make_object_store(parse_location(url, options))
    config = dict(getattr(store, "config", {}) or {})
    return config, dict(store.client_options or {})


# (url, storage_options, expected obstore config entries, expected client entries)
SPELLINGS: list[tuple[str, dict[str, Any], dict[str, str], dict[str, str]]] = [
    # s3fs
    (S3, {"anon": True}, {"skip_signature": "true"}, {}),
    (S3, {"anon": False}, {}, {}),
    (
        S3,
        {"key": "AK", "secret": "SK", "token": "TK"},
        {"access_key_id": "AK", "secret_access_key": "SK", "session_token": "TK"},
        {},
    ),
    (
        S3,
        {"username": "AK", "password": "SK"},
        {"access_key_id": "AK", "secret_access_key": "SK"},
        {},
    ),
    (
        S3,
        {"endpoint_url": "http://127.0.0.1:9000"},
        {"endpoint": "http://127.0.0.1:9000"},
        {"allow_http": "true"},
    ),
    (
        S3,
        {"client_kwargs": {"endpoint_url": "https://minio.local", "region_name": "eu-west-1"}},
        {"endpoint": "https://minio.local", "region": "eu-west-1"},
        {},
    ),
    (
        S3,
        {
            "client_kwargs": {
                "aws_access_key_id": "AK",
                "aws_secret_access_key": "SK",
                "verify": False,
            }
        },
        {"access_key_id": "AK", "secret_access_key": "SK"},
        {"allow_invalid_certificates": "true"},
    ),
    (S3, {"requester_pays": True}, {"request_payer": "true"}, {}),
    (S3, {"s3_additional_kwargs": {"RequestPayer": "requester"}}, {"request_payer": "true"}, {}),
    (S3, {"region_name": "eu-central-1"}, {"region": "eu-central-1"}, {}),
    (S3, {"use_ssl": False}, {}, {"allow_http": "true"}),
    (S3, {"config_kwargs": {"signature_version": "unsigned"}}, {"skip_signature": "true"}, {}),
    (
        S3,
        {"config_kwargs": {"s3": {"addressing_style": "virtual"}, "connect_timeout": 5}},
        {"virtual_hosted_style_request": "true"},
        {"connect_timeout": "5s"},
    ),
    (S3, {"default_fill_cache": False, "use_listings_cache": False}, {}, {}),
    # obstore's names, its aliases, and client settings at the top level
    (
        S3,
        {"skip_signature": True, "region": "us-west-2"},
        {"skip_signature": "true", "region": "us-west-2"},
        {},
    ),
    (
        S3,
        {"aws_access_key_id": "AK", "aws_secret_access_key": "SK", "aws_region": "eu-west-3"},
        {"access_key_id": "AK", "secret_access_key": "SK", "region": "eu-west-3"},
        {},
    ),
    (S3, {"allow_http": True}, {}, {"allow_http": "true"}),  # obstore panics on this today
    (
        S3,
        {"client_options": {"allow_http": True, "timeout": "5s"}},
        {},
        {"allow_http": "true", "timeout": "5s"},
    ),
    (S3, {"timeout": 7}, {}, {"timeout": "7s"}),
    # gcsfs
    (GS, {"token": "anon"}, {"skip_signature": "true"}, {}),
    (GS, {"anon": True}, {"skip_signature": "true"}, {}),
    (GS, {"token": "{sa}"}, {"service_account": "{sa}"}, {}),
    (GS, {"token": "google_default"}, {}, {}),
    (
        GS,
        {"endpoint_url": "http://127.0.0.1:4443", "token": "anon"},
        {"base_url": "http://127.0.0.1:4443", "skip_signature": "true"},
        {"allow_http": "true"},
    ),
    (GS, {"google_service_account": "{sa}"}, {"service_account": "{sa}"}, {}),
    (GS, {"requests_timeout": 20}, {}, {"timeout": "20s"}),
    # adlfs
    (
        AZ,
        {"account_name": "acct", "anon": True},
        {"account_name": "acct", "skip_signature": "true"},
        {},
    ),
    (
        AZ,
        {"account_name": "acct", "sas_token": "sv=2022&sig=abc"},
        {"account_name": "acct", "sas_key": "sv=2022&sig=abc"},
        {},
    ),
    (
        AZ,
        {"account_name": "acct", "credential": "sv=2022&sig=abc"},
        {"account_name": "acct", "sas_key": "sv=2022&sig=abc"},
        {},
    ),
    (
        AZ,
        {"account_name": "acct", "credential": "a2V5"},
        {"account_name": "acct", "account_key": "a2V5"},
        {},
    ),
    (
        AZ,
        {
            "connection_string": "DefaultEndpointsProtocol=https;AccountName=acct;"
            "AccountKey=a2V5;EndpointSuffix=core.windows.net"
        },
        {"account_name": "acct", "account_key": "a2V5"},
        {},
    ),
    (
        AZ,
        {"account_name": "acct", "client_id": "id", "client_secret": "cs", "tenant_id": "t"},
        {"account_name": "acct", "client_id": "id", "client_secret": "cs", "tenant_id": "t"},
        {},
    ),
    (
        AZ,
        {"azure_storage_account_name": "acct", "azure_storage_account_key": "a2V5"},
        {"account_name": "acct", "account_key": "a2V5"},
        {},
    ),
    (
        AZ,
        {"account_name": "acct", "account_host": "acct.blob.core.windows.net"},
        {"account_name": "acct", "endpoint": "https://acct.blob.core.windows.net"},
        {},
    ),
    # a SAS token in an Azure URL becomes sas_key (obstore would drop it)
    (
        "https://acct.blob.core.windows.net/container/era5.zarr?sv=2022&sig=abc",
        {},
        {"account_name": "acct", "sas_key": "sv=2022&sig=abc"},
        {},
    ),
    # fsspec's HTTPFileSystem
    (HTTP, {"headers": {"X-Api-Key": "k"}}, {}, {"default_headers": {"x-api-key": b"k"}}),
    (
        HTTP,
        {"client_kwargs": {"headers": {"X-Api-Key": "k"}}},
        {},
        {"default_headers": {"x-api-key": b"k"}},
    ),
    (HTTP, {"anon": True, "ssl": False}, {}, {"allow_invalid_certificates": "true"}),
]


@pytest.mark.parametrize(
    ("url", "options", "config", "client"),
    SPELLINGS,
    ids=[f"{u.split(':')[0]}-{'-'.join(o) or 'url'}" for u, o, _, _ in SPELLINGS],
)
def test_spellings_reach_obstore(
    url: str,
    options: dict[str, Any],
    config: dict[str, str],
    client: dict[str, Any],
    service_account_file: str,
) -> None:
    options, config = _fill(options, service_account_file), _fill(config, service_account_file)
    got_config, got_client = built(url, options)
    for key, value in config.items():
        assert got_config.get(key) == value, (key, got_config)
    for key, value in client.items():
        assert got_client.get(key) == value, (key, got_client)
    # obstore's own retries are off: earthstream retries (and counts) every request
    store = make_object_store(parse_location(url, options))
    assert store.retry_config["max_retries"] == 0
    # normalizing is idempotent: what a location stores means the same again
    location = parse_location(url, options)
    assert parse_location(location.url, dict(location.options)).options == location.options


def test_timeouts_never_exceed_the_retry_budget() -> None:
    _, client = built(S3, {"retry": {"budget_s": 2}})
    assert client["timeout"] == "2s" and client["connect_timeout"] == "2s"
    _, client = built(S3, {})
    assert client["timeout"] == "1m" and client["connect_timeout"] == "10s"
    _, client = built(S3, {"retry": {"budget_s": 2}, "timeout": "30s"})
    assert client["timeout"] == "30s"  # an explicit timeout is kept


@pytest.mark.parametrize(
    ("url", "options", "match"),
    [
        (
            S3,
            {"anonymous": True},
            r"'anonymous'.*Did you mean 'anon'\?.*Accepted keys: .*skip_signature",
        ),
        (S3, {"acess_key_id": "x"}, r"'acess_key_id'.*Did you mean 'access_key_id'"),
        (S3, {"endpont_url": "x"}, r"'endpont_url'.*Did you mean 'endpoint_url'"),
        (GS, {"service_acount": "x"}, r"'service_acount'.*Did you mean 'service_account'"),
        (AZ, {"acount_name": "x"}, r"'acount_name'.*Did you mean 'account_name'"),
        (HTTP, {"region": "eu"}, r"'region' is not known for http stores"),
        (S3, {"client_kwargs": {"proxies": {}}}, r"client_kwargs.*'proxies'"),
        (S3, {"client_options": {"alow_http": True}}, r"'alow_http'.*Did you mean 'allow_http'"),
        (S3, {"profile": "default"}, r"profile.*cannot be used"),
        (S3, {"retry_config": {"max_retries": 3}}, r"retry_config.*retry="),
        (GS, {"project": "p"}, r"project.*cannot be used"),
        (S3, {"retry": {"max_attempt": 2}}, r"'max_attempt'.*Did you mean 'max_attempts'"),
        (S3, {"retry": {"budget_s": float("nan")}}, r"budget_s"),
        (S3, {"max_requests": 0}, r"max_requests"),
        (S3, {"anon": "maybe"}, r"anon.*True or False"),
        (S3, {"region": ["eu"]}, r"region.*string"),
        (S3, {"timeout": -1}, r"timeout.*positive"),
        (S3, {"key": "a", "aws_access_key_id": "b"}, r"a second time"),
        (AZ, {"credential": object()}, r"credential objects cannot be used"),
    ],
)
def test_unknown_or_unusable_options_raise_config_error(
    url: str, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_location(url, options)
    with pytest.raises(ConfigError, match=match):
        es.open_zarr(url, storage_options=options)  # before any request


def test_gcs_token_dict_becomes_the_service_account_key(service_account: dict[str, str]) -> None:
    config, _ = built(GS, {"token": service_account})
    assert json.loads(config["service_account_key"]) == service_account


def test_values_obstore_refuses_raise_config_error() -> None:
    # accepted as a spelling, refused by obstore itself: still a ConfigError, no raw error
    location = parse_location(GS, {"token": {"type": "service_account", "private_key": "PK"}})
    with pytest.raises(ConfigError, match="refused its configuration") as info:
        make_object_store(location)
    assert "PK" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


_KEYS = sorted({k for f in ("s3", "gcs", "azure", "http") for k in accepted_keys(f)})
_VALUES = st.one_of(
    st.booleans(),
    st.none(),
    st.integers(-5, 100),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["true", "http://127.0.0.1:1", "anon", "5s", "requester"]),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    url=st.sampled_from([S3, GS, AZ, HTTP, "http://127.0.0.1:1/x.zarr"]),
    options=st.dictionaries(
        st.one_of(st.sampled_from(_KEYS), st.text(min_size=1, max_size=10)), _VALUES, max_size=4
    ),
)
def test_no_option_makes_the_client_panic(url: str, options: dict[str, Any]) -> None:
    """Any keys and values: a store, or a ConfigError; never a panic or a raw obstore error."""
    with contextlib.suppress(ConfigError):
        make_object_store(parse_location(url, options))


# -- a real read with the fsspec spellings ----------------------------------------------
@pytest.fixture(scope="module")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoS3, Path]]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    root = tmp_path_factory.mktemp("s3opts")
    path = es.datasets.era5_like(root / "era5.zarr", n_times=4, n_lat=8, n_lon=16)
    bare = root / "bare.zarr"  # no consolidated metadata: arrays are found by listing
    shutil.copytree(path, bare)
    doc = json.loads((bare / "zarr.json").read_text())
    doc.pop("consolidated_metadata", None)
    (bare / "zarr.json").write_text(json.dumps(doc))
    server = moto_s3()
    server.create_bucket("opts")
    server.upload("opts", "era5.zarr", path)
    server.upload("opts", "bare.zarr", bare)
    yield server, path
    server.stop()


@pytest.mark.parametrize(
    "style",
    ["s3fs", "client_kwargs", "obstore", "top-level-client"],
)
def test_s3_read_with_fsspec_spellings(s3_store: tuple[MotoS3, Path], style: str) -> None:
    server, path = s3_store
    options: dict[str, Any] = {
        "s3fs": {
            "key": "testing",
            "secret": "testing",
            "endpoint_url": server.endpoint,
            "client_kwargs": {"region_name": "us-east-1"},
        },
        "client_kwargs": {
            "client_kwargs": {
                "endpoint_url": server.endpoint,
                "region_name": "us-east-1",
                "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing",
            }
        },
        "obstore": server.options(),
        "top-level-client": {
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "endpoint": server.endpoint,
            "region": "us-east-1",
            "allow_http": True,  # a Rust panic in obstore when given at the top level
        },
    }[style]
    source = es.open_zarr("s3://opts/era5.zarr", storage_options=options)
    local = es.open_zarr(path)
    np.testing.assert_array_equal(source.coords["time"], local.coords["time"])
    for name, info in source.variables.items():
        index = (1,) + (0,) * (len(info.dims) - 1)
        np.testing.assert_array_equal(source.read_chunk(name, index), local.read_chunk(name, index))


def test_s3_store_without_consolidated_metadata_is_listed(s3_store: tuple[MotoS3, Path]) -> None:
    server, path = s3_store
    options = {"anon": False, **server.options(), "retry": {"max_attempts": 2}}
    source = es.open_zarr("s3://opts/bare.zarr", storage_options=options)
    local = es.open_zarr(path)
    assert list(source.variables) == list(local.variables)  # found by listing, in name order
