"""``python -m earthstream``: the same as the ``earthstream`` command."""

import sys

from .cli import main

sys.exit(main())
