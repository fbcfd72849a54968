"""Keeping credentials out of every message, repr, report and log record.

Three kinds of secret can reach a message: the user info of a URL
(``https://user:password@host``), secret query parameters of signed URLs (Azure
SAS ``sig``/``se``/``sp``..., S3 presigned ``X-Amz-Signature``/``X-Amz-Credential``
/``X-Amz-Security-Token``, CloudFront ``Signature``, anything named like a token,
key, secret or password), and the values of secret ``storage_options`` (keys,
secrets, tokens, headers), which a client library may echo in its own errors.
:func:`redact` removes the first two by their shape and the third by value.

The stored URL and options keep their secrets (requests need them); only what
is shown is redacted.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

__all__ = ["is_secret_name", "redact", "secret_values", "url_secrets"]

MASK = "***"

#: Query parameters of signed URLs that carry (or are part of) a credential.
_SECRET_PARAMS = frozenset(
    {
        # Azure SAS
        "sig",
        "se",
        "st",
        "sp",
        "sv",
        "sr",
        "srt",
        "ss",
        "spr",
        "sip",
        "skoid",
        "sktid",
        "skt",
        "ske",
        "sks",
        "skv",
        "saoid",
        "suoid",
        "scid",
        # CloudFront / GCS signed URLs
        "signature",
        "policy",
        "key-pair-id",
        "googleaccessid",
        "expires",
    }
)
_SECRET_PARAM_PREFIXES = ("x-amz-", "x-goog-")

#: Names (of options, parameters, headers) that hold secrets.
_SECRET_NAME = re.compile(
    r"token|key|secret|passw|pwd|credential|signature|sas|auth|session|cookie|sig$",
    re.IGNORECASE,
)

_USERINFO = re.compile(r"([a-zA-Z][\w+.-]*://)[^/@\s?#\"'<>]+@")
_QUERY_PARAM = re.compile(r"([?&;])([^=&;\s#?\"'<>]+)=([^&;\s#\"'<>]*)")
#: ``name=value``, ``name: value``, ``'name': 'value'`` for secret-looking names.
_NAMED_VALUE = re.compile(
    r"((?:secret|token|passw(?:or)?d|passwd|pwd|[\w-]*key|signature|credential|"
    r"authorization|sas|sig)[\w-]*[\"']?\s*[=:]\s*[\"']?(?:(?:Bearer|Basic)\s+)?)"
    r"([^&\s,;\"'{}\[\]][^&\s,;\"'}\]]*)",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """Whether an option, query parameter or header called ``name`` holds a secret.

    >>> [is_secret_name(n) for n in ("sig", "X-Amz-Signature", "secret", "region", "anon")]
    [True, True, True, False, False]
    """
    lowered = name.lower()
    return (
        lowered in _SECRET_PARAMS
        or lowered.startswith(_SECRET_PARAM_PREFIXES)
        or _SECRET_NAME.search(lowered) is not None
    )


def _query_param(match: re.Match[str]) -> str:
    sep, name, value = match.groups()
    return f"{sep}{name}={MASK}" if is_secret_name(unquote(name)) and value else match.group(0)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without credentials: URL user info, secret query parameters,
    ``name=value`` secrets and any of the given secret values.

    >>> redact("GET https://user:pw@host/x?X-Amz-Signature=abc&a=1")
    'GET https://***@host/x?X-Amz-Signature=***&a=1'
    >>> redact("https://acct.blob.core.windows.net/c/x.zarr?sv=2022&sig=abc%3D&comp=list")
    'https://acct.blob.core.windows.net/c/x.zarr?sv=***&sig=***&comp=list'
    >>> redact("{'secret': 'hunter22', 'region': 'eu'}")
    "{'secret': '***', 'region': 'eu'}"
    >>> redact("the server said: hunter22 is wrong", secrets=["hunter22"])
    'the server said: *** is wrong'
    """
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, MASK)
            encoded = quote(secret, safe="")
            if encoded != secret:
                text = text.replace(encoded, MASK)
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    text = _QUERY_PARAM.sub(_query_param, text)
    return _NAMED_VALUE.sub(rf"\1{MASK}", text)


def url_secrets(url: str) -> tuple[str, ...]:
    """The secret parts of a URL: its user info and secret query values.

    >>> url_secrets("https://me:pw123@host/x.zarr?sig=abc&a=1")
    ('me:pw123', 'pw123', 'bWU6cHcxMjM=', 'abc')
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return ()
    out: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        out.append(userinfo)
        if ":" in userinfo:
            out.append(userinfo.split(":", 1)[1])
        out.append(base64.b64encode(unquote(userinfo).encode()).decode())  # as Basic auth
    for item in parts.query.replace(";", "&").split("&"):
        name, _, value = item.partition("=")
        if value and is_secret_name(unquote(name)):
            out.extend({value, unquote(value)})
    return tuple(s for s in out if s)


def secret_values(options: Mapping[str, Any], *, all_values: bool = False) -> tuple[str, ...]:
    """The values of secret entries in (nested) storage options.

    A string is secret when its key looks like a credential (``secret``,
    ``token``, ``account_key``, ``sas_key``, ...), when it sits inside headers
    or a secret entry (a service-account dict), or is a URL with user info.

    >>> secret_values({"key": "AK", "secret": "SK", "region": "eu", "anon": False})
    ('AK', 'SK')
    >>> secret_values({"client_kwargs": {"headers": {"Authorization": "Bearer t0k"}}})
    ('Bearer t0k',)
    """
    out: list[str] = []
    for name, value in options.items():
        secret = all_values or is_secret_name(str(name)) or str(name).lower() in _HEADER_KEYS
        if isinstance(value, Mapping):
            out.extend(secret_values(value, all_values=secret))
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, Mapping):
                    out.extend(secret_values(item, all_values=secret))
                elif isinstance(item, str) and secret:
                    out.append(item)
        elif isinstance(value, str):
            if secret:
                out.append(value)
            elif "://" in value:
                out.extend(url_secrets(value))
    return tuple(dict.fromkeys(s for s in out if s))


#: Option names whose values are all secret (HTTP headers carry credentials).
_HEADER_KEYS = frozenset({"headers", "default_headers"})
