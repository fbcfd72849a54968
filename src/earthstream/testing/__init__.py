"""Real servers on loopback for testing and benchmarking earthstream against remote stores.

``nginx_server(root)`` serves a folder over HTTP with Range support (Debian's
``nginx-light``) and counts requests from its access log; ``FaultProxy`` sits
in front of a server and injects status codes, connection resets, truncated or
corrupted bodies and latency on a schedule; ``moto_s3()`` starts moto's S3
server; ``StacApiServer`` serves a small STAC API over item dicts.  The test
suite and ``earthstream bench`` use them; they are handy in your own CI too.

:class:`SourceTests` is the conformance test class every source passes: subclass
it with a fixture that builds your source and one that gives the same values
from an independent reader (needs pytest; loaded when first used).
"""

from typing import TYPE_CHECKING, Any

from ._faults import FaultProxy, MotoS3, ProxiedRequest, Rule, moto_s3
from ._servers import (
    LoggedRequest,
    NginxServer,
    StacApiServer,
    find_nginx,
    free_port,
    nginx_server,
)

if TYPE_CHECKING:
    from ._sources import SourceTests

__all__ = [
    "FaultProxy",
    "LoggedRequest",
    "MotoS3",
    "NginxServer",
    "ProxiedRequest",
    "Rule",
    "SourceTests",
    "StacApiServer",
    "find_nginx",
    "free_port",
    "moto_s3",
    "nginx_server",
]


def __getattr__(name: str) -> Any:
    if name == "SourceTests":  # imports pytest: only when asked for
        from ._sources import SourceTests

        return SourceTests
    raise AttributeError(f"module 'earthstream.testing' has no attribute {name!r}")
