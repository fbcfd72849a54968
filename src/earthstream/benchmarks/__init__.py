"""``earthstream bench``: earthstream, the decode limit and the peers, side by side in one run.

Each method runs in a fresh process on the same store (warm page cache), after a
warm-up, several times; medians are reported.  See docs/performance.md.
"""

from ._inference import run_inference_bench
from ._runner import FIELDS, BenchConfig, format_table, run_bench
from ._stores import LAYOUTS, SIZES, make_store

__all__ = [
    "FIELDS",
    "LAYOUTS",
    "SIZES",
    "BenchConfig",
    "format_table",
    "make_store",
    "run_bench",
    "run_inference_bench",
]
