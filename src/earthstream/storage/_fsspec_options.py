"""fsspec spellings of ``storage_options`` (s3fs, gcsfs, adlfs, HTTP): each mapped once to
obstore's names through an :class:`~earthstream.storage._option_keys.OptionsBuilder`."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigError
from ._option_keys import _REFUSED, Family, OptionsBuilder, _bool, _mapping, _str

__all__ = ["FSSPEC_HANDLERS"]


def _anon(b: OptionsBuilder, value: Any, where: str) -> None:
    if _bool(value, where) and b.family != "http":
        b.set_config("skip_signature", True, where)


def _to(name: str) -> Callable[[OptionsBuilder, Any, str], None]:
    def handler(b: OptionsBuilder, value: Any, where: str) -> None:
        b.add(name, value, where)

    return handler


def _verify(b: OptionsBuilder, value: Any, where: str) -> None:
    if isinstance(value, bool):
        if not value:
            b.set_client("allow_invalid_certificates", True, where)
        return
    raise ConfigError(
        f"{where} must be True or False; to trust a private CA pass "
        "client_options={'root_certificate': <PEM text>}."
    )


def _use_ssl(b: OptionsBuilder, value: Any, where: str) -> None:
    if not _bool(value, where):
        b.set_client("allow_http", True, where)


def _s3_client_kwargs(b: OptionsBuilder, value: Any, where: str) -> None:
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


def _s3_config_kwargs(b: OptionsBuilder, value: Any, where: str) -> None:
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


def _s3_additional_kwargs(b: OptionsBuilder, value: Any, where: str) -> None:
    for key, item in _mapping(value, where).items():
        inner = f"{where}[{key!r}]"
        if key == "RequestPayer":
            b.set_config("request_payer", item, inner)
        else:
            raise ConfigError(
                f"{inner}: only RequestPayer applies to reads; remove the other request arguments."
            )


def _gcs_token(b: OptionsBuilder, value: Any, where: str) -> None:
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


def _requester_pays_gcs(b: OptionsBuilder, value: Any, where: str) -> None:
    if value not in (False, None):
        raise ConfigError(f"{where} cannot be used: {_REFUSED['project']}.")


def _azure_connection_string(b: OptionsBuilder, value: Any, where: str) -> None:
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


def _azure_credential(b: OptionsBuilder, value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise ConfigError(
            f"{where} is a {type(value).__name__}; credential objects cannot be used. Pass "
            "sas_token=..., account_key=..., or client_id/client_secret/tenant_id."
        )
    looks_sas = "sig=" in value or value.startswith("?")
    b.set_config("sas_key" if looks_sas else "account_key", value.lstrip("?"), where)


def _account_host(b: OptionsBuilder, value: Any, where: str) -> None:
    host = _str(value, where)
    b.set_config("endpoint", host if "://" in host else f"https://{host}", where)


def _http_client_kwargs(b: OptionsBuilder, value: Any, where: str) -> None:
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


FSSPEC_HANDLERS: dict[Family, dict[str, Callable[[OptionsBuilder, Any, str], None]]] = {
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
