"""The test suite's servers now live in :mod:`earthstream.testing`; kept for imports."""

from earthstream.testing import *  # noqa: F403
from earthstream.testing import __all__  # noqa: F401
