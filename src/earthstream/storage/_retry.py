"""Classified retries with jittered exponential backoff, and request statistics.

Object stores fail in two ways.  Transient faults (5xx, 429/SlowDown,
timeouts, connection resets, truncated bodies, short reads) are retried with
"full jitter" exponential backoff until an attempt or time budget runs out.
Everything else (403, 400, other 4xx) fails at once: retrying cannot help.
A missing object (404) is not a failure here: Zarr gives it the fill value.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..errors import ShortReadError, StoreAccessError, StoreRequestError
from ..protocols import RequestCounts
from ._secrets import redact

__all__ = ["RequestStats", "RetryPolicy", "call_with_retries", "classify", "redact"]

T = TypeVar("T")
_STATUS = re.compile(r"status code:? (\d{3})|HTTP status(?: code)?:? (\d{3})")


@dataclass(frozen=True)
class RetryPolicy:
    """How transient request failures are retried.

    Attempt ``n`` (from 1) waits a random time in ``[0, min(max_delay,
    base_delay * 2**n)]`` before trying again; no retry starts after
    ``budget_s`` seconds from the first attempt or beyond ``max_attempts``.
    """

    max_attempts: int = 10
    base_delay: float = 0.05
    max_delay: float = 2.0
    budget_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** min(attempt, 60)))


def classify(exc: BaseException) -> tuple[str, bool, int | None]:
    """``(kind, retryable, HTTP status)`` of a storage exception.

    >>> classify(OSError("Server returned non-2xx status code: 503 Service Unavailable"))
    ('server', True, 503)
    >>> classify(OSError("Server returned non-2xx status code: 400 Bad Request"))
    ('client', False, 400)
    """
    if isinstance(exc, FileNotFoundError):
        return "missing", False, 404
    if isinstance(exc, ShortReadError):
        return "short_read", True, None
    name = type(exc).__name__
    message = str(exc)
    match = _STATUS.search(message)
    status = int(match.group(1) or match.group(2)) if match else None
    if name in ("PermissionDeniedError", "UnauthenticatedError") or status in (401, 403):
        return "denied", False, status or 403
    if isinstance(exc, PermissionError):  # e.g. from a zarr store object
        return "denied", False, status
    if status == 429 or "SlowDown" in message or "TooManyRequests" in message:
        return "throttled", True, status or 429
    if status is not None and status >= 500:
        return "server", True, status
    if status is not None and 400 <= status < 500:
        return "client", False, status
    lowered = message.lower()
    if "body error" in lowered or "incomplete" in lowered or "unexpected eof" in lowered:
        return "truncated", True, None
    if any(
        word in lowered
        for word in (
            "timed out",
            "timeout",
            "connection",
            "error sending request",
            "reset",
            "broken pipe",
        )
    ):
        return "connection", True, None
    return "other", False, status


class RequestStats:
    """Counters of one reader (thread-safe): requests, retries, bytes, failures by kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.bytes = 0
        self.failures: Counter[str] = Counter()

    def record(
        self, *, requests: int = 0, retries: int = 0, nbytes: int = 0, failure: str = ""
    ) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries
            self.bytes += nbytes
            if failure:
                self.failures[failure] += 1

    def snapshot(self) -> RequestCounts:
        with self._lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "bytes": self.bytes,
                "failures": dict(self.failures),
            }


def call_with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy,
    stats: RequestStats,
    rng: random.Random,
    size: Callable[[T], int] = lambda _: 0,
    secrets: Sequence[str] = (),
) -> T:
    """Run one request, retrying transient failures; ``what`` names URL and key.

    Raises ``FileNotFoundError`` for a missing object, :class:`StoreAccessError`
    for refused access and :class:`StoreRequestError` for other failures (at once
    when not retryable, after the budget otherwise).  Messages never carry
    credentials (``what`` and the client's message are redacted, also of the
    given ``secrets``), and the raised error chains nothing: the client's own
    exception, which may quote a signed URL, is neither ``__cause__`` nor
    ``__context__``.  A Rust panic of the client becomes a
    :class:`StoreRequestError` too.
    """
    started = time.monotonic()
    attempt = 0
    what = redact(what, secrets)
    while True:
        attempt += 1
        stats.record(requests=1, retries=1 if attempt > 1 else 0)
        failure: BaseException | None = None
        try:
            result = fn()
        except FileNotFoundError:
            raise
        except BaseException as exc:  # classified below; nothing is swallowed
            if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise
            failure = exc
        if failure is None:
            stats.record(nbytes=size(result))
            return result
        error = _failure_error(failure, what, attempt, started, policy, stats, secrets)
        del failure
        if error is not None:
            raise error  # outside the except block: no __context__ to leak
        time.sleep(policy.delay(attempt, rng))


def _failure_error(
    exc: BaseException,
    what: str,
    attempt: int,
    started: float,
    policy: RetryPolicy,
    stats: RequestStats,
    secrets: Sequence[str],
) -> Exception | None:
    """The error to raise for a failed attempt, or ``None`` to retry it."""
    kind, retryable, status = classify(exc)
    if type(exc).__name__ == "PanicException":
        kind, retryable = "client panic", False
    stats.record(failure=kind)
    text = str(exc)
    detail = redact(text.splitlines()[0] if text else type(exc).__name__, secrets)
    if kind == "denied":
        return StoreAccessError(
            f"access to {what} was refused "
            f"({f'HTTP {status}' if status else type(exc).__name__}): {detail}. Check the "
            "credentials (environment or storage_options) and their permissions."
        )
    elapsed = time.monotonic() - started
    out_of_budget = attempt >= policy.max_attempts or elapsed >= policy.budget_s
    if retryable and not out_of_budget:
        return None
    why = (
        f"failed after {attempt} attempts in {elapsed:.1f} s"
        if retryable
        else "failed and cannot succeed by retrying"
    )
    return StoreRequestError(
        f"reading {what} {why} ({kind}{f', HTTP {status}' if status else ''}): "
        f"{detail}. Check the URL and the store; for flaky networks raise the retry "
        "budget (storage_options={'retry': {'max_attempts': ..., 'budget_s': ...}})."
    )
