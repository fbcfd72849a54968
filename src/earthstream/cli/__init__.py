"""The ``earthstream`` command: ``demo``, ``info`` (and more subcommands as they land)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="earthstream",
        description="Stream cloud-native geospatial and climate data into ML training.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="generate an ERA5-like store and train a next-step CNN on it for a minute",
        description=(
            "Generates (once, into the cache folder) an ERA5-like Zarr v3 store of a few hundred "
            "MB, then trains a small PyTorch CNN to predict the next 6-hourly step from the "
            "current one, streaming chunk-shuffled windows with earthstream."
        ),
    )
    demo.add_argument("--seconds", type=float, default=60.0, help="training time (default 60)")
    demo.add_argument(
        "--cache-dir",
        default=None,
        help="folder for the store and the figure "
        "(default $EARTHSTREAM_CACHE or ~/.cache/earthstream)",
    )
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--small", action="store_true", help="a tiny store, for a quick check")

    info = sub.add_parser("info", help="describe a Zarr store: variables, dims, chunks, codecs")
    info.add_argument("url", help="local path or URL of the store")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        return run_demo(
            seconds=args.seconds,
            cache_dir=args.cache_dir,
            batch_size=args.batch_size,
            seed=args.seed,
            small=args.small,
        )
    if args.command == "info":
        from .. import open_zarr

        print(open_zarr(args.url))
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
