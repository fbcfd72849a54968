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
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .._names import suggest
from ..errors import ConfigError
from ._fsspec_options import FSSPEC_HANDLERS
from ._option_keys import (
    _CLIENT_KEYS,
    _IGNORED,
    _REFUSED,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_REQUESTS,
    DEFAULT_TIMEOUT_S,
    Family,
    OptionsBuilder,
    _mapping,
    _plain_http_endpoint,
    _unknown,
    accepted_keys,
    store_family,
)
from ._retry import RetryPolicy

__all__ = [
    "DEFAULT_MAX_REQUESTS",
    "Family",
    "StoreOptions",
    "accepted_keys",
    "normalize_options",
    "own_options",
    "store_family",
]


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
    b = OptionsBuilder(family)
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
            handler = FSSPEC_HANDLERS[family].get(key)
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
