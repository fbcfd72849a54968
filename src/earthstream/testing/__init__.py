"""Real servers on loopback for testing and benchmarking earthstream against remote stores.

``nginx_server(root)`` serves a folder over HTTP with Range support (Debian's
``nginx-light``) and counts requests from its access log; ``FaultProxy`` sits
in front of a server and injects status codes, connection resets, truncated or
corrupted bodies and latency on a schedule; ``moto_s3()`` starts moto's S3
server; ``StacApiServer`` serves a small STAC API over item dicts.  The test
suite and ``earthstream bench`` use them; they are handy in your own CI too.
"""

from ._faults import FaultProxy, MotoS3, ProxiedRequest, Rule, moto_s3
from ._servers import (
    LoggedRequest,
    NginxServer,
    StacApiServer,
    find_nginx,
    free_port,
    nginx_server,
)

__all__ = [
    "FaultProxy",
    "LoggedRequest",
    "MotoS3",
    "NginxServer",
    "ProxiedRequest",
    "Rule",
    "StacApiServer",
    "find_nginx",
    "free_port",
    "moto_s3",
    "nginx_server",
]
