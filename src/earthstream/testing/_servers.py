"""Real HTTP servers on loopback for tests: nginx for files, counted from its access log.

``nginx_server(root)`` starts a real nginx (Debian's ``nginx-light``; ``make test``
installs it when missing) serving ``root`` on ``127.0.0.1`` with byte-range
support (single and multi-range), logging every request to an access log in
its own temp dir.  ``NginxServer.requests()`` parses that log, so tests count
the HTTP requests a read really costs.  Use it as a context manager or call
``stop()``; the session fixtures in ``tests/conftest.py`` do that.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LoggedRequest",
    "NginxServer",
    "StacApiServer",
    "find_nginx",
    "free_port",
    "nginx_server",
]

_LOG_FORMAT = '$request_method $uri $status $body_bytes_sent "$http_range" $request_time'


@dataclass(frozen=True)
class LoggedRequest:
    """One line of the access log."""

    method: str
    path: str
    status: int
    bytes_sent: int
    range: str  # the Range header as sent, "" when none

    @property
    def n_ranges(self) -> int:
        return 0 if not self.range else self.range.count(",") + 1


def find_nginx() -> str | None:
    """The nginx binary, also when /usr/sbin is not on PATH."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NginxServer:
    """A running nginx serving ``root`` at ``base_url``; see :func:`nginx_server`."""

    def __init__(self, root: str | os.PathLike[str], binary: str) -> None:
        self.root = Path(root).resolve()
        self.workdir = Path(tempfile.mkdtemp(prefix="nginx-"))
        self.access_log = self.workdir / "access.log"
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self, port: int) -> str:
        w = self.workdir
        temp = "\n".join(
            f"    {name}_temp_path {w}/{name};"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""
daemon off;
master_process off;
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format ranges '{_LOG_FORMAT}';
    access_log {self.access_log} ranges;
{temp}
    default_type application/octet-stream;
    types {{ application/json json; image/tiff tif tiff; }}
    sendfile on;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {self.root};
        location / {{ autoindex off; }}
    }}
}}
"""

    def start(self, attempts: int = 5) -> NginxServer:
        last = ""
        for _ in range(attempts):
            port = free_port()
            conf = self.workdir / "nginx.conf"
            conf.write_text(self._config(port))
            proc = subprocess.Popen(
                [self._binary, "-c", str(conf), "-p", str(self.workdir), "-e", "stderr"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    last = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
                    break
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        self._proc, self.port = proc, port
                        self.clear_log()
                        return self
                except OSError:
                    time.sleep(0.02)
            else:
                proc.kill()
                proc.wait()
                last = "nginx did not accept connections within 10 s"
        raise RuntimeError(f"could not start nginx: {last}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self._proc.kill()
                self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> NginxServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the access log ---------------------------------------------------------------
    def clear_log(self) -> None:
        """Start counting afresh (nginx appends to the same open file)."""
        with open(self.access_log, "w"):
            pass

    def requests(self, path_prefix: str = "") -> list[LoggedRequest]:
        """Requests logged since the last :meth:`clear_log` (nginx logs after each response)."""
        out: list[LoggedRequest] = []
        if not self.access_log.exists():
            return out
        for line in self.access_log.read_text().splitlines():
            head, _, rest = line.partition(' "')
            rng, _, _ = rest.partition('"')
            method, path, status, sent = head.split()[:4]
            if path.startswith(path_prefix):
                rng = "" if rng == "-" else rng
                out.append(LoggedRequest(method, path, int(status), int(sent), rng))
        return out

    def url(self, path: str | os.PathLike[str]) -> str:
        """The URL of a file under ``root``."""
        rel = Path(path).resolve().relative_to(self.root)
        return f"{self.base_url}/{rel.as_posix()}"

    def fetch(self, path: str) -> bytes:
        with urllib.request.urlopen(f"{self.base_url}/{path.lstrip('/')}") as r:
            return bytes(r.read())


def nginx_server(root: str | os.PathLike[str]) -> NginxServer:
    """Start nginx serving ``root`` on a free loopback port; returns the running server.

    ``server.base_url`` is its URL; stop it with ``server.stop()`` (or ``with``).
    Raises ``RuntimeError`` when nginx is not installed (``make test`` installs
    Debian's ``nginx-light``).
    """
    binary = find_nginx()
    if binary is None:
        raise RuntimeError(
            "nginx is not installed; run `make test` (installs nginx-light) or "
            "`apt-get install nginx-light`."
        )
    return NginxServer(root, binary).start()


# -- a small STAC API on loopback ------------------------------------------------------
CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "https://api.stacspec.org/v1.0.0/item-search#query",
]


def _parse_time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _match_query(item: dict[str, Any], query: dict[str, Any] | None) -> bool:
    """The STAC query extension: ``{"prop": {"eq"|"neq"|"lt"|"lte"|"gt"|"gte"|"in": v}}``."""
    ops = {
        "eq": lambda a, b: a == b,
        "neq": lambda a, b: a != b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "in": lambda a, b: a in b,
    }
    for prop, conditions in (query or {}).items():
        value = item["properties"].get(prop)
        for op, operand in conditions.items():
            if value is None or not ops[op](value, operand):
                return False
    return True


def _match(
    item: dict[str, Any],
    bbox: list[float] | None,
    interval: str | None,
    collections: Any,
    ids: Any,
) -> bool:
    if collections and item.get("collection") not in collections:
        return False
    if ids and item["id"] not in ids:
        return False
    if bbox is not None:
        b = item["bbox"]
        if b[0] > bbox[2] or b[2] < bbox[0] or b[1] > bbox[3] or b[3] < bbox[1]:
            return False
    if interval:
        t = _parse_time(item["properties"]["datetime"])
        if "/" in interval:
            lo, hi = interval.split("/")
            if lo not in ("", "..") and t < _parse_time(lo):
                return False
            if hi not in ("", "..") and t > _parse_time(hi):
                return False
        elif t != _parse_time(interval):
            return False
    return True


class StacApiServer:
    """A STAC API (core + item-search, GET and POST, paging) over in-memory item dicts.

    Serves ``/``, ``/conformance``, ``/collections``, ``/collections/{id}`` and
    ``/search`` with ``bbox``, ``datetime``, ``collections``, ``ids`` and ``limit``
    on ``http.server`` in a thread; ``requests`` records ``(method, path)``.
    """

    def __init__(self, items: list[dict[str, Any]], collections: list[dict[str, Any]]) -> None:
        import http.server
        import threading

        self.items = items
        self.collections = collections
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, body: dict[str, Any], status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlparse

                url = urlparse(self.path)
                server.requests.append(("GET", url.path))
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/search":
                    self._send(server.search(q, "GET"))
                else:
                    body = server.route(url.path)
                    self._send(body or {"code": "NotFound"}, 200 if body else 404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append(("POST", self.path))
                if self.path.split("?")[0] == "/search":
                    self._send(server.search(body, "POST"))
                else:
                    self._send({"code": "NotFound"}, 404)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _link(self, rel: str, path: str, **extra: object) -> dict[str, Any]:
        return {"rel": rel, "href": f"{self.url}{path}", "type": "application/json", **extra}

    def route(self, path: str) -> dict[str, Any] | None:
        if path in ("", "/"):
            return {
                "type": "Catalog",
                "id": "test-api",
                "stac_version": "1.0.0",
                "description": "earthstream test STAC API",
                "conformsTo": CONFORMANCE,
                "links": [
                    self._link("self", "/"),
                    self._link("root", "/"),
                    self._link("conformance", "/conformance"),
                    self._link("data", "/collections"),
                    self._link("search", "/search", method="GET"),
                    self._link("search", "/search", method="POST"),
                ],
            }
        if path == "/conformance":
            return {"conformsTo": CONFORMANCE}
        if path == "/collections":
            return {"collections": self.collections, "links": [self._link("self", path)]}
        if path.startswith("/collections/"):
            cid = path.split("/")[2]
            for c in self.collections:
                if c["id"] == cid:
                    return c
        return None

    def search(self, q: dict[str, Any], method: str) -> dict[str, Any]:
        def as_list(v: Any) -> list[Any] | None:
            if v is None:
                return None
            return v.split(",") if isinstance(v, str) else list(v)

        bbox = as_list(q.get("bbox"))
        bbox_f = [float(v) for v in bbox] if bbox else None
        query = q.get("query")
        if isinstance(query, str):
            query = json.loads(query)
        matched = [
            i
            for i in self.items
            if _match_query(i, query)
            if _match(
                i, bbox_f, q.get("datetime"), as_list(q.get("collections")), as_list(q.get("ids"))
            )
        ]
        limit = int(q.get("limit", 10))
        token = int(q.get("token", 0))
        page = matched[token : token + limit]
        links = [self._link("root", "/")]
        if token + limit < len(matched):
            if method == "GET":
                from urllib.parse import urlencode

                nq = {k: v for k, v in q.items() if k != "token"}
                nq["token"] = str(token + limit)
                links.append(self._link("next", f"/search?{urlencode(nq)}", method="GET"))
            else:
                links.append(
                    self._link("next", "/search", method="POST", body={"token": token + limit},
                               merge=True)
                )  # fmt: skip
        return {
            "type": "FeatureCollection",
            "features": page,
            "links": links,
            "numberMatched": len(matched),
            "numberReturned": len(page),
        }

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
