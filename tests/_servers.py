"""Real HTTP servers on loopback for tests: nginx for files, counted from its access log.

``nginx_server(root)`` starts a real nginx (Debian's ``nginx-light``; ``make test``
installs it when missing) serving ``root`` on ``127.0.0.1`` with byte-range
support (single and multi-range), logging every request to an access log in
its own temp dir.  ``NginxServer.requests()`` parses that log, so tests count
the HTTP requests a read really costs.  Use it as a context manager or call
``stop()``; the session fixtures in ``tests/conftest.py`` do that.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LoggedRequest", "NginxServer", "find_nginx", "free_port", "nginx_server"]

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
        out = []
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
