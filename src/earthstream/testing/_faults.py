"""A fault-injecting HTTP proxy and a moto S3 server, both real servers on loopback.

``FaultProxy`` forwards GET/HEAD requests (with their Range header) to an
upstream server, usually nginx, and injects faults on a schedule: status codes
(503, 429, 403, 404), connection resets, truncated bodies, corrupted bodies and
delays.  Every request it sees is recorded, so tests can count retries.

``moto_s3()`` starts moto's S3 server (``moto[server]``) on a free port.
"""

from __future__ import annotations

import http.client
import http.server
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from ._servers import free_port

__all__ = ["FaultProxy", "MotoS3", "ProxiedRequest", "Rule", "moto_s3"]


@dataclass
class Rule:
    """Inject ``action`` on the next ``times`` requests whose path matches ``pattern``.

    Actions: ``"status"`` (answer ``status`` without forwarding), ``"reset"``
    (close the connection abruptly), ``"truncate"`` (send the headers and half
    the body, then close), ``"corrupt"`` (flip bytes of the body), ``"delay"``
    (wait ``seconds`` then forward).
    """

    pattern: str
    action: str
    times: int = 1
    status: int = 503
    seconds: float = 0.0
    hits: int = 0

    def matches(self, path: str) -> bool:
        return self.hits < self.times and re.search(self.pattern, path) is not None


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str
    range: str
    action: str  # "forward" or the injected fault
    status: int
    authorization: str = ""  # the Authorization header as received ("" when none)


@dataclass
class _State:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    delay: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    log: list[ProxiedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, no delayed-ACK waits
    state: _State

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self, action: str, status: int) -> None:
        with self.state.lock:
            self.state.log.append(
                ProxiedRequest(
                    self.command,
                    self.path,
                    self.headers.get("Range", ""),
                    action,
                    status,
                    self.headers.get("Authorization", ""),
                )
            )

    def _rule(self) -> Rule | None:
        with self.state.lock:
            for rule in self.state.rules:
                if rule.matches(self.path):
                    rule.hits += 1
                    return rule
        return None

    def _reset(self) -> None:
        # SO_LINGER 0: close sends RST instead of FIN
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def do_HEAD(self) -> None:
        self._counted(head=True)

    def do_GET(self) -> None:
        self._counted(head=False)

    def _counted(self, head: bool) -> None:
        with self.state.lock:
            self.state.in_flight += 1
            self.state.max_in_flight = max(self.state.max_in_flight, self.state.in_flight)
        try:
            self._handle(head)
        finally:
            with self.state.lock:
                self.state.in_flight -= 1

    def _handle(self, head: bool) -> None:
        rule = self._rule()
        if self.state.delay:
            time.sleep(self.state.delay)
        if rule is not None and rule.action == "delay":
            time.sleep(rule.seconds)
        if rule is not None and rule.action == "status":
            self._record("status", rule.status)
            body = f"injected {rule.status}\n".encode()
            self.send_response(rule.status)
            self.send_header("Content-Length", str(len(body)))
            if rule.status in (429, 503):
                self.send_header("Retry-After", "0")
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        if rule is not None and rule.action == "reset":
            self._record("reset", 0)
            self._reset()
            return
        upstream = urlparse(self.state.upstream)
        conn = http.client.HTTPConnection(
            upstream.hostname or "127.0.0.1", upstream.port, timeout=30
        )
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("range", "if-match")}
        conn.request(self.command, self.path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        action = rule.action if rule is not None else "forward"
        self._record(action, response.status)
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() in (
                "content-length",
                "content-range",
                "content-type",
                "etag",
                "last-modified",
                "accept-ranges",
            ):
                self.send_header(key, value)
        self.end_headers()
        if head:
            return
        if action == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self._reset()
            return
        if action == "corrupt" and body:
            body = bytes(b ^ 0x5A for b in body[:64]) + body[64:]
        self.wfile.write(body)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # clients open dozens of connections at once (default: 5)


class FaultProxy:
    """A proxy in front of ``upstream`` (e.g. nginx) that injects faults by rule."""

    def __init__(self, upstream: str) -> None:
        self.state = _State(upstream=upstream.rstrip("/"))
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = _Server(("127.0.0.1", 0), handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, pattern: str, action: str, **kwargs: Any) -> Rule:
        rule = Rule(pattern, action, **kwargs)
        with self.state.lock:
            self.state.rules.append(rule)
        return rule

    def set_delay(self, seconds: float) -> None:
        """Delay every request by ``seconds`` (simulated network latency)."""
        self.state.delay = seconds

    def reset(self) -> None:
        """Forget rules, delay, the request log and the concurrency high-water mark."""
        with self.state.lock:
            self.state.rules.clear()
            self.state.log.clear()
            self.state.delay = 0.0
            self.state.max_in_flight = 0

    @property
    def max_in_flight(self) -> int:
        """The most requests the proxy was serving at once since the last reset."""
        return self.state.max_in_flight

    def requests(
        self, where: Callable[[ProxiedRequest], bool] | None = None
    ) -> list[ProxiedRequest]:
        with self.state.lock:
            log = list(self.state.log)
        return [r for r in log if where is None or where(r)]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MotoS3:
    """moto's S3 server on loopback, with a bucket."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def options(self) -> dict[str, Any]:
        """``storage_options`` for earthstream / obstore."""
        return {
            "endpoint": self.endpoint,
            "region": "us-east-1",
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "client_options": {"allow_http": True},
        }

    def _client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def create_bucket(self, name: str) -> None:
        self._client().create_bucket(Bucket=name)

    def upload(self, bucket: str, prefix: str, folder: Any) -> int:
        """Upload every file under ``folder`` to ``s3://bucket/prefix/``; returns the count."""
        from pathlib import Path

        client = self._client()
        count = 0
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(folder).as_posix()}"
                client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
                count += 1
        return count

    def stop(self) -> None:
        self._server.stop()


def moto_s3() -> MotoS3:
    return MotoS3()
