"""``storage_options`` as users already write them, normalized to obstore's names.

People arrive with the options they pass to ``xarray.open_zarr`` (fsspec with
s3fs, gcsfs or adlfs behind it): ``anon``, ``key``/``secret``/``token``,
``endpoint_url``, ``client_kwargs={"endpoint_url": ..., "region_name": ...}``,
``requester_pays`` ...  Each is mapped once, at the edge, to obstore's own
configuration key (``S3Config``, ``GCSConfig``, ``AzureConfig``) or HTTP client
setting (``ClientConfig``); obstore's names and their documented aliases
(``aws_access_key_id``, ``google_service_account``, ``azure_storage_account_key``
...) work as they are.  A key that means nothing raises :class:`ConfigError`
naming it, with the accepted keys and a "did you mean"; nothing reaches obstore
that could make it panic.

Keys earthstream reads itself: ``retry`` (``max_attempts``, ``base_delay``,
``max_delay``, ``budget_s``) and ``max_requests``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from .._names import suggest
from ..errors import ConfigError
from ._retry import RetryPolicy

__all__ = [
    "DEFAULT_MAX_REQUESTS",
    "StoreOptions",
    "accepted_keys",
    "normalize_options",
    "store_family",
]

Family = Literal["s3", "gcs", "azure", "http"]

#: Requests in flight to an object store, by default.
DEFAULT_MAX_REQUESTS = 64
#: Per-request timeout when none is given (and never more than the retry budget).
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
_MAX_DURATION_S = 7 * 86400.0

# -- obstore's configuration keys (obstore 0.12: S3Config, GCSConfig, AzureConfig,
#    ClientConfig), by the type of their values ----------------------------------------
_S3_STR = (
    "access_key_id",
    "aws_endpoint_url_s3",
    "bucket",
    "checksum_algorithm",
    "conditional_put",
    "container_authorization_token_file",
    "container_credentials_full_uri",
    "container_credentials_relative_uri",
    "copy_if_not_exists",
    "default_region",
    "endpoint",
    "metadata_endpoint",
    "region",
    "role_arn",
    "role_session_name",
    "secret_access_key",
    "server_side_encryption",
    "session_token",
    "sse_customer_key_base64",
    "sse_kms_key_id",
    "sts_endpoint",
    "web_identity_token_file",
)
_S3_BOOL = (
    "disable_bulk_delete",
    "disable_tagging",
    "imdsv1_fallback",
    "s3_express",
    "skip_signature",
    "sse_bucket_key_enabled",
    "unsigned_payload",
    "virtual_hosted_style_request",
)
_GCS_STR = (
    "application_credentials",
    "base_url",
    "bearer_token",
    "bucket",
    "service_account",
    "service_account_key",
)
_GCS_BOOL = ("skip_signature",)
_AZURE_STR = (
    "account_key",
    "account_name",
    "authority_host",
    "client_id",
    "client_secret",
    "container_name",
    "credential_type",
    "encryption_key",
    "endpoint",
    "fabric_cluster_identifier",
    "fabric_session_token",
    "fabric_token_service_url",
    "fabric_workload_host",
    "federated_token_file",
    "msi_endpoint",
    "msi_resource_id",
    "object_id",
    "sas_key",
    "tenant_id",
    "token",
)
_AZURE_BOOL = (
    "disable_tagging",
    "skip_signature",
    "use_azure_cli",
    "use_emulator",
    "use_fabric_endpoint",
)
_CLIENT_STR = (
    "default_content_type",
    "pool_max_idle_per_host",
    "proxy_ca_certificate",
    "proxy_excludes",
    "proxy_url",
    "user_agent",
)
_CLIENT_BOOL = (
    "allow_http",
    "allow_invalid_certificates",
    "http1_only",
    "http2_keep_alive_while_idle",
    "http2_only",
    "randomize_addresses",
)
_CLIENT_DURATION = (
    "connect_timeout",
    "http2_keep_alive_interval",
    "http2_keep_alive_timeout",
    "pool_idle_timeout",
    "read_timeout",
    "timeout",
)
_CLIENT_OTHER = ("default_headers", "root_certificate")
_CLIENT_KEYS = frozenset(_CLIENT_STR + _CLIENT_BOOL + _CLIENT_DURATION + _CLIENT_OTHER)

_CONFIG_KEYS: dict[Family, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "s3": (_S3_STR, (*_S3_BOOL, "request_payer")),
    "gcs": (_GCS_STR, _GCS_BOOL),
    "azure": (_AZURE_STR, _AZURE_BOOL),
    "http": ((), ()),
}

#: obstore's documented aliases of its keys (object_store's ``*ConfigKey`` parsers).
_ALIASES: dict[Family, dict[str, str]] = {
    "s3": {
        "aws_endpoint_url": "endpoint",
        "endpoint_url": "endpoint",
        "aws_token": "session_token",
        "bucket_name": "bucket",
        "aws_bucket_name": "bucket",
        "aws_sse_customer_key_base64": "sse_customer_key_base64",
        "aws_server_side_encryption": "server_side_encryption",
    },
    "gcs": {
        "service_account_path": "service_account",
        "google_service_account_path": "service_account",
        "bucket_name": "bucket",
        "google_bucket_name": "bucket",
    },
    "azure": {
        "access_key": "account_key",
        "master_key": "account_key",
        "azure_storage_access_key": "account_key",
        "azure_storage_master_key": "account_key",
        "sas_token": "sas_key",
        "azure_storage_sas_token": "sas_key",
        "bearer_token": "token",
        "azure_storage_token": "token",
        "authority_id": "tenant_id",
        "azure_storage_authority_id": "tenant_id",
        "azure_authority_id": "tenant_id",
        "container": "container_name",
        "azure_container_name": "container_name",
    },
    "http": {},
}
_PREFIXES: dict[Family, tuple[str, ...]] = {
    "s3": ("aws_",),
    "gcs": ("google_",),
    "azure": ("azure_storage_", "azure_"),
    "http": (),
}

#: fsspec caching and event-loop knobs: no counterpart here, and no effect on data.
_IGNORED = frozenset(
    {
        "asynchronous",
        "block_size",
        "blocksize",
        "cache_regions",
        "cache_timeout",
        "default_block_size",
        "default_cache_type",
        "default_fill_cache",
        "listings_expiry_time",
        "loop",
        "max_concurrency",
        "skip_instance_cache",
        "use_listings_cache",
    }
)

#: fsspec keys that cannot be honoured, with what to do instead.
_REFUSED: dict[str, str] = {
    "profile": "AWS profiles are not read; pass key/secret (or set AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY in the environment)",
    "session": "a botocore/aiohttp session object cannot be used; pass its credentials",
    "version_aware": "object versions are not supported; read the current version",
    "project": "GCS billing projects are not supported by the object-store client (obstore)",
    "location_mode": "Azure secondary-location reads are not supported",
    "request_session": "a requests session object cannot be used; pass its credentials",
    "retry_config": "earthstream retries every request itself; use "
    "retry={'max_attempts': ..., 'budget_s': ...}",
}

_EARTHSTREAM = ("retry", "max_requests")
_FSSPEC: dict[Family, tuple[str, ...]] = {
    "s3": (
        "anon",
        "key",
        "secret",
        "token",
        "username",
        "password",
        "endpoint_url",
        "region_name",
        "requester_pays",
        "use_ssl",
        "client_kwargs",
        "config_kwargs",
        "s3_additional_kwargs",
    ),
    "gcs": ("anon", "token", "endpoint_url", "requester_pays", "requests_timeout", "access"),
    "azure": (
        "anon",
        "connection_string",
        "credential",
        "account_host",
        "connection_timeout",
        "socket_timeout",
        "assume_container_exists",
    ),
    "http": ("anon", "headers", "client_kwargs", "ssl", "verify"),
}


@dataclass(frozen=True)
class StoreOptions:
    """Normalized ``storage_options`` of one remote store.

    ``config`` holds obstore store keys (canonical names), ``client`` obstore's
    HTTP client settings; ``retry`` and ``max_requests`` are earthstream's own.
    """

    family: Family
    config: dict[str, Any] = field(default_factory=dict)
    client: dict[str, Any] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_requests: int = DEFAULT_MAX_REQUESTS
    credential_provider: Any = None

    def as_dict(self) -> dict[str, Any]:
        """The same options in canonical spelling (normalizing them again is a no-op)."""
        out: dict[str, Any] = dict(self.config)
        if self.client:
            out["client_options"] = dict(self.client)
        if self.retry != RetryPolicy():
            out["retry"] = asdict(self.retry)
        if self.max_requests != DEFAULT_MAX_REQUESTS:
            out["max_requests"] = self.max_requests
        if self.credential_provider is not None:
            out["credential_provider"] = self.credential_provider
        return out

    def client_options(self) -> dict[str, Any]:
        """obstore's ``client_options``, with per-request timeouts no stalled server
        can exceed: ``timeout`` defaults to 60 s but never more than the retry budget,
        ``connect_timeout`` to 10 s but never more than ``timeout``."""
        client = dict(self.client)
        budget = max(self.retry.budget_s, 0.5)
        timeout = client.get("timeout")
        if timeout is None:
            client["timeout"] = dt.timedelta(seconds=min(DEFAULT_TIMEOUT_S, budget))
        if "connect_timeout" not in client:
            limit = client["timeout"] if isinstance(client["timeout"], dt.timedelta) else None
            seconds = min(DEFAULT_CONNECT_TIMEOUT_S, budget)
            if limit is not None:
                seconds = min(seconds, limit.total_seconds())
            client["connect_timeout"] = dt.timedelta(seconds=seconds)
        return client


def store_family(scheme: str, url: str) -> Family:
    """Which obstore store serves ``url`` (as ``obstore.store.from_url`` decides)."""
    if scheme in ("s3", "s3a"):
        return "s3"
    if scheme in ("gs", "gcs"):
        return "gcs"
    if scheme in ("az", "azure", "abfs", "abfss", "adl"):
        return "azure"
    host = (urlsplit(url).hostname or "").lower()
    if host.endswith(("amazonaws.com", "r2.cloudflarestorage.com")):
        return "s3"
    if host.endswith(
        (
            "blob.core.windows.net",
            "dfs.core.windows.net",
            "blob.fabric.microsoft.com",
            "dfs.fabric.microsoft.com",
        )
    ):
        return "azure"
    return "http"


def accepted_keys(family: Family) -> list[str]:
    """Every key ``storage_options`` accepts for a store of this family (sorted),
    except obstore's prefixed aliases (``aws_...``, ``google_...``, ``azure_...``)."""
    strs, bools = _CONFIG_KEYS[family]
    keys = {*strs, *bools, *_CLIENT_KEYS, *_EARTHSTREAM, *_FSSPEC[family], *_ALIASES[family]}
    keys |= {"client_options", "credential_provider"}
    return sorted(keys)


class _Builder:
    """Collects normalized options; ``where`` names the option for messages."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self.config: dict[str, Any] = {}
        self.client: dict[str, Any] = {}
        self.explicit_http: bool | None = None
        strs, bools = _CONFIG_KEYS[family]
        self.str_keys = frozenset(strs)
        self.bool_keys = frozenset(bools)

    # -- values ---------------------------------------------------------------------
    def set_config(self, key: str, value: Any, where: str) -> None:
        if key == "request_payer":
            value = _request_payer(value, where)
        elif key in self.bool_keys:
            value = _bool(value, where)
        else:
            value = _str(value, where)
        self._put(self.config, key, value, where)

    def set_client(self, key: str, value: Any, where: str) -> None:
        if key in _CLIENT_BOOL:
            value = _bool(value, where)
            if key == "allow_http":
                self.explicit_http = value
        elif key in _CLIENT_DURATION:
            value = _duration(value, where)
        elif key == "default_headers":
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, (str, bytes)) for k, v in value.items()
            ):
                raise ConfigError(f"{where} must be a dict of header names to strings.")
            value = dict(value)
            value = {**self.client.get("default_headers", {}), **value}
            self.client["default_headers"] = value
            return
        elif key == "root_certificate":
            if not isinstance(value, (str, bytes)):
                raise ConfigError(f"{where} must be a PEM certificate (str or bytes).")
        elif key == "pool_max_idle_per_host" and isinstance(value, int):
            value = str(value)
        else:
            value = _str(value, where)
        self._put(self.client, key, value, where)

    @staticmethod
    def _put(target: dict[str, Any], key: str, value: Any, where: str) -> None:
        if key in target and target[key] != value:
            raise ConfigError(
                f"{where} sets {key!r} a second time, to another value; "
                "give each setting once (storage_options spell some settings several ways)."
            )
        target[key] = value

    # -- keys -----------------------------------------------------------------------
    def canonical(self, key: str) -> tuple[str, str] | None:
        """``("config" | "client", canonical name)`` of an obstore key or alias."""
        lowered = key.lower()
        for name in (
            lowered,
            *(lowered[len(p) :] for p in _PREFIXES[self.family] if lowered.startswith(p)),
        ):
            name = _ALIASES[self.family].get(name, name)
            if name in self.str_keys or name in self.bool_keys:
                return "config", name
            if name in _CLIENT_KEYS:
                return "client", name
        return None

    def add(self, key: str, value: Any, where: str) -> None:
        found = self.canonical(key)
        if found is None:
            raise ConfigError(_unknown(key, self.family, where))
        kind, name = found
        if kind == "config":
            self.set_config(name, value, where)
        else:
            self.set_client(name, value, where)


def normalize_options(family: Family, options: Mapping[str, Any] | None) -> StoreOptions:
    """Map ``storage_options`` to obstore's names; raise :class:`ConfigError` for
    what cannot be used.

    >>> opts = normalize_options("s3", {"anon": True, "client_kwargs": {
    ...     "endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"}})
    >>> opts.config
    {'skip_signature': True, 'endpoint': 'http://127.0.0.1:9000', 'region': 'eu-west-1'}
    >>> opts.client
    {'allow_http': True}
    >>> normalize_options("s3", {"anonymous": True})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    earthstream.errors.ConfigError: storage_options key 'anonymous' is not known ... 'anon'? ...
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"storage_options must be a dict, not {type(options).__name__}; e.g. "
            "storage_options={'anon': True}."
        )
    b = _Builder(family)
    retry: Any = None
    max_requests: Any = None
    provider: Any = None
    for key, value in options.items():
        if not isinstance(key, str):
            raise ConfigError(f"storage_options keys must be strings, not {key!r}.")
        where = f"storage_options[{key!r}]"
        if key == "retry":
            retry = value
        elif key == "max_requests":
            max_requests = value
        elif key == "credential_provider":
            provider = value
        elif key == "client_options":
            for k, v in _mapping(value, where).items():
                if str(k) not in _CLIENT_KEYS:
                    raise ConfigError(
                        f"{where} has the unknown key {k!r}.{suggest(str(k), sorted(_CLIENT_KEYS))}"
                        f" Accepted keys: {', '.join(sorted(_CLIENT_KEYS))}."
                    )
                b.set_client(str(k), v, f"{where}[{k!r}]")
        elif key in _IGNORED:
            continue
        elif key in _REFUSED:
            raise ConfigError(f"{where} cannot be used: {_REFUSED[key]}.")
        elif b.canonical(key) is not None:
            b.add(key, value, where)
        else:
            handler = _FSSPEC_HANDLERS[family].get(key)
            if handler is None:
                raise ConfigError(_unknown(key, family, "storage_options"))
            handler(b, value, where)
    if b.explicit_http is None and _plain_http_endpoint(b.config):
        b.client["allow_http"] = True  # an http:// endpoint was asked for explicitly
    return StoreOptions(
        family=family,
        config=b.config,
        client=b.client,
        retry=_retry_policy(retry),
        max_requests=_max_requests(max_requests),
        credential_provider=provider,
    )


def _plain_http_endpoint(config: Mapping[str, Any]) -> bool:
    return any(
        isinstance(config.get(k), str) and config[k].lower().startswith("http://")
        for k in ("endpoint", "aws_endpoint_url_s3", "base_url")
    )


def _unknown(key: str, family: Family, where: str) -> str:
    keys = accepted_keys(family)
    return (
        f"{where} key {key!r} is not known for {family} stores.{suggest(key, keys)} "
        f"Accepted keys: {', '.join(keys)} (and obstore's prefixed aliases such as "
        f"{'aws_' if family == 's3' else 'google_' if family == 'gcs' else 'azure_storage_'}"
        "...)."
    )


# -- value checks ---------------------------------------------------------------------
def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ConfigError(f"{where} must be True or False, not {type(value).__name__}.")


def _str(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where} must be a string, not {type(value).__name__}.")


def _duration(value: Any, where: str) -> dt.timedelta | str:
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        try:
            seconds = float(value)
        except ValueError:
            return value.strip()  # a duration string ("30s", "2min"): obstore parses it
    else:
        raise ConfigError(
            f"{where} must be a duration: seconds (a number), a timedelta or a string "
            "such as '30s'."
        )
    if not math.isfinite(seconds) or seconds <= 0 or seconds > _MAX_DURATION_S:
        raise ConfigError(
            f"{where}={value!r} must be a positive duration of at most {_MAX_DURATION_S:.0f} s."
        )
    return dt.timedelta(seconds=seconds)


def _request_payer(value: Any, where: str) -> bool:
    if isinstance(value, str) and value.strip().lower() == "requester":
        return True
    return _bool(value, where)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a dict, not {type(value).__name__}.")
    return value


def own_options(options: Mapping[str, Any]) -> tuple[RetryPolicy, int]:
    """earthstream's own options (``retry``, ``max_requests``) of a store whose client
    is configured elsewhere (a zarr-python store object), validated.

    >>> own_options({"max_requests": 8})
    (RetryPolicy(max_attempts=10, base_delay=0.05, max_delay=2.0, budget_s=60.0), 8)
    """
    return _retry_policy(options.get("retry")), _max_requests(options.get("max_requests"))


def _retry_policy(value: Any) -> RetryPolicy:
    if value is None:
        return RetryPolicy()
    if isinstance(value, RetryPolicy):
        return value
    where = "storage_options['retry']"
    fields = ("max_attempts", "base_delay", "max_delay", "budget_s")
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a dict with keys {', '.join(fields)}.")
    for key in value:
        if key not in fields:
            raise ConfigError(
                f"{where} has the unknown key {key!r}.{suggest(str(key), list(fields))} "
                f"Accepted keys: {', '.join(fields)}."
            )
    attempts = value.get("max_attempts", RetryPolicy.max_attempts)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ConfigError(f"{where}['max_attempts']={attempts!r} must be an integer >= 1.")
    numbers: dict[str, float] = {}
    for key in ("base_delay", "max_delay", "budget_s"):
        raw = value.get(key, getattr(RetryPolicy, key))
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ConfigError(f"{where}[{key!r}]={raw!r} must be a number of seconds.")
        number = float(raw)
        if not math.isfinite(number) or number < 0 or (key == "budget_s" and number == 0):
            raise ConfigError(f"{where}[{key!r}]={raw!r} must be a finite number of seconds > 0.")
        numbers[key] = number
    return RetryPolicy(max_attempts=attempts, **numbers)


def _max_requests(value: Any) -> int:
    if value is None:
        return DEFAULT_MAX_REQUESTS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"storage_options['max_requests']={value!r} must be an integer >= 1.")
    return value


# -- fsspec spellings (s3fs, gcsfs, adlfs, fsspec's HTTPFileSystem) -----------------
def _anon(b: _Builder, value: Any, where: str) -> None:
    if _bool(value, where) and b.family != "http":
        b.set_config("skip_signature", True, where)


def _to(name: str) -> Callable[[_Builder, Any, str], None]:
    def handler(b: _Builder, value: Any, where: str) -> None:
        b.add(name, value, where)

    return handler


def _verify(b: _Builder, value: Any, where: str) -> None:
    if isinstance(value, bool):
        if not value:
            b.set_client("allow_invalid_certificates", True, where)
        return
    raise ConfigError(
        f"{where} must be True or False; to trust a private CA pass "
        "client_options={'root_certificate': <PEM text>}."
    )


def _use_ssl(b: _Builder, value: Any, where: str) -> None:
    if not _bool(value, where):
        b.set_client("allow_http", True, where)


def _s3_client_kwargs(b: _Builder, value: Any, where: str) -> None:
    names = {
        "endpoint_url": "endpoint",
        "region_name": "region",
        "aws_access_key_id": "access_key_id",
        "aws_secret_access_key": "secret_access_key",
        "aws_session_token": "session_token",
    }
    for key, item in _mapping(value, where).items():
        inner = f"{where}[{key!r}]"
        if key in names:
            b.add(names[key], item, inner)
        elif key == "verify":
            _verify(b, item, inner)
        elif key == "use_ssl":
            _use_ssl(b, item, inner)
        elif key == "config":
            raise ConfigError(f"{inner}: pass botocore settings as config_kwargs (a dict).")
        else:
            raise ConfigError(
                f"{where} has the key {key!r}, which has no counterpart here. Accepted keys: "
                f"{', '.join([*names, 'use_ssl', 'verify'])}."
            )


def _s3_config_kwargs(b: _Builder, value: Any, where: str) -> None:
    for key, item in _mapping(value, where).items():
        inner = f"{where}[{key!r}]"
        if key == "signature_version":
            if str(item).lower() != "unsigned":
                raise ConfigError(f"{inner}={item!r}: only 'unsigned' (anonymous) is supported.")
            b.set_config("skip_signature", True, inner)
        elif key == "s3":
            for k, v in _mapping(item, inner).items():
                if k != "addressing_style" or v not in ("virtual", "path", "auto"):
                    raise ConfigError(
                        f"{inner}[{k!r}]={v!r}: only addressing_style 'virtual', 'path' or "
                        "'auto' is supported."
                    )
                if v != "auto":
                    b.set_config("virtual_hosted_style_request", v == "virtual", inner)
        elif key in ("connect_timeout", "read_timeout"):
            b.set_client(key, item, inner)
        elif key == "region_name":
            b.add("region", item, inner)
        elif key == "retries":
            raise ConfigError(f"{inner}: {_REFUSED['retry_config']}.")
        else:
            raise ConfigError(
                f"{where} has the key {key!r}, which has no counterpart here. Accepted keys: "
                "signature_version, s3 (addressing_style), connect_timeout, read_timeout, "
                "region_name."
            )


def _s3_additional_kwargs(b: _Builder, value: Any, where: str) -> None:
    for key, item in _mapping(value, where).items():
        inner = f"{where}[{key!r}]"
        if key == "RequestPayer":
            b.set_config("request_payer", item, inner)
        else:
            raise ConfigError(
                f"{inner}: only RequestPayer applies to reads; remove the other request arguments."
            )


def _gcs_token(b: _Builder, value: Any, where: str) -> None:
    if value is None or value in ("google_default", "cloud"):
        return  # the default credential chain (environment, metadata server)
    if value == "anon":
        b.set_config("skip_signature", True, where)
    elif isinstance(value, Mapping):
        b.set_config("service_account_key", json.dumps(dict(value)), where)
    elif isinstance(value, str) and value.lstrip().startswith("{"):
        b.set_config("service_account_key", value, where)
    elif isinstance(value, str) and value not in ("browser", "cache"):
        b.set_config("service_account", value, where)  # a path to a key file
    else:
        raise ConfigError(
            f"{where}={value if isinstance(value, str) else type(value).__name__!r} cannot be "
            "used: pass token='anon', a service-account key file path or its JSON (a dict), "
            "or leave it out for the default credentials."
        )


def _requester_pays_gcs(b: _Builder, value: Any, where: str) -> None:
    if value not in (False, None):
        raise ConfigError(f"{where} cannot be used: {_REFUSED['project']}.")


def _azure_connection_string(b: _Builder, value: Any, where: str) -> None:
    parts = {}
    for item in _str(value, where).split(";"):
        name, sep, text = item.partition("=")
        if sep:
            parts[name.strip().lower()] = text.strip()
    names = {
        "accountname": "account_name",
        "accountkey": "account_key",
        "sharedaccesssignature": "sas_key",
        "blobendpoint": "endpoint",
    }
    for name, text in parts.items():
        if name in names:
            b.set_config(names[name], text, where)
        elif name not in ("defaultendpointsprotocol", "endpointsuffix"):
            raise ConfigError(
                f"{where} has the part {name!r}, which has no counterpart here (accepted: "
                "AccountName, AccountKey, SharedAccessSignature, BlobEndpoint)."
            )
    if parts.get("defaultendpointsprotocol") == "http":
        b.set_client("allow_http", True, where)


def _azure_credential(b: _Builder, value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise ConfigError(
            f"{where} is a {type(value).__name__}; credential objects cannot be used. Pass "
            "sas_token=..., account_key=..., or client_id/client_secret/tenant_id."
        )
    looks_sas = "sig=" in value or value.startswith("?")
    b.set_config("sas_key" if looks_sas else "account_key", value.lstrip("?"), where)


def _account_host(b: _Builder, value: Any, where: str) -> None:
    host = _str(value, where)
    b.set_config("endpoint", host if "://" in host else f"https://{host}", where)


def _http_client_kwargs(b: _Builder, value: Any, where: str) -> None:
    for key, item in _mapping(value, where).items():
        inner = f"{where}[{key!r}]"
        if key == "headers":
            b.set_client("default_headers", item, inner)
        elif key in ("ssl", "verify"):
            _verify(b, item, inner)
        elif key == "trust_env":
            continue  # proxies from the environment: obstore reads them too
        else:
            raise ConfigError(
                f"{inner} has no counterpart here (accepted: headers, ssl, verify, trust_env). "
                "Put credentials in the URL (https://user:password@host/...) or in "
                "headers={'Authorization': ...}."
            )


_FSSPEC_HANDLERS: dict[Family, dict[str, Callable[[_Builder, Any, str], None]]] = {
    "s3": {
        "anon": _anon,
        "key": _to("access_key_id"),
        "username": _to("access_key_id"),
        "secret": _to("secret_access_key"),
        "password": _to("secret_access_key"),
        "token": _to("session_token"),
        "region_name": _to("region"),
        "requester_pays": lambda b, v, w: b.set_config("request_payer", v, w),
        "use_ssl": _use_ssl,
        "client_kwargs": _s3_client_kwargs,
        "config_kwargs": _s3_config_kwargs,
        "s3_additional_kwargs": _s3_additional_kwargs,
    },
    "gcs": {
        "anon": _anon,
        "token": _gcs_token,
        "endpoint_url": _to("base_url"),
        "requester_pays": _requester_pays_gcs,
        "requests_timeout": _to("timeout"),
        "access": lambda b, v, w: None,  # an OAuth scope: reads need read access only
    },
    "azure": {
        "anon": _anon,
        "connection_string": _azure_connection_string,
        "credential": _azure_credential,
        "account_host": _account_host,
        "connection_timeout": _to("connect_timeout"),
        "socket_timeout": _to("read_timeout"),
        "assume_container_exists": lambda b, v, w: None,  # only matters for writes
    },
    "http": {
        "anon": _anon,
        "headers": lambda b, v, w: b.set_client("default_headers", v, w),
        "client_kwargs": _http_client_kwargs,
        "ssl": _verify,
        "verify": _verify,
    },
}
