"""The keys ``storage_options`` accepts, by store family, and how their values are checked.

obstore's own configuration keys (``S3Config``, ``GCSConfig``, ``AzureConfig``,
``ClientConfig``) with their aliases and prefixes, the fsspec spellings people
bring (s3fs, gcsfs, adlfs), what is ignored or refused, and :class:`OptionsBuilder`,
which collects normalized values (see :func:`~earthstream.storage._options.normalize_options`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from .._names import suggest
from ..errors import ConfigError

__all__ = ["DEFAULT_MAX_REQUESTS", "Family", "OptionsBuilder", "accepted_keys", "store_family"]

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


class OptionsBuilder:
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
