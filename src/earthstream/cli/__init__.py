"""The ``earthstream`` command: ``demo``, ``bench``, ``info``, ``stats``.

Errors a user can fix print one line on stderr, ``earthstream: error: ...``,
and set the exit status: 2 for bad arguments or configuration (argparse's
own code for usage errors), 1 for store and data errors (a missing or damaged
store, a refused request, corrupt chunks).  ``--debug`` (or
``EARTHSTREAM_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from ..errors import (
    ConfigError,
    DimensionError,
    EarthstreamError,
    MemoryBudgetError,
    ResumeError,
    StatsMismatchError,
    VariableNotFoundError,
    WindowError,
)

__all__ = ["EXIT_DATA", "EXIT_USAGE", "main"]

#: Exit status for bad arguments or configuration (as argparse's usage errors).
EXIT_USAGE = 2
#: Exit status for store and data errors (not found, refused, damaged, failed requests).
EXIT_DATA = 1
#: Errors of the arguments themselves (exit 2); every other error is the store's or the data's.
_USAGE_ERRORS = (
    ConfigError,
    DimensionError,
    MemoryBudgetError,
    ResumeError,
    StatsMismatchError,
    VariableNotFoundError,
    WindowError,
)


def _version() -> str:
    from .. import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an error (also EARTHSTREAM_DEBUG=1)",
    )
    parser = argparse.ArgumentParser(
        prog="earthstream",
        description="Stream cloud-native geospatial and climate data into ML training.",
        epilog="Exit status: 0 done, 1 store or data error, 2 bad arguments or configuration.",
        parents=[debug],
    )
    parser.add_argument("--version", action="version", version=f"earthstream {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser: Callable[..., argparse.ArgumentParser] = sub.add_parser

    def command(name: str, **kwargs: object) -> argparse.ArgumentParser:
        return add_parser(name, parents=[debug], **kwargs)

    demo = command(
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
    demo.add_argument(
        "--multimodal",
        action="store_true",
        help="weather variables + pressure levels + static fields -> t2m 24 h ahead",
    )

    bench = command(
        "bench",
        help="measure earthstream against the decode limit and the peers on one store",
        description=(
            "Generates an ERA5-like store in several layouts and measures, side by side in one "
            "run: the decode limit, earthstream (chunk-shuffled, fully shuffled, grid order), "
            "xbatcher (with/without dask, plain/DataLoader) and naive zarr-python; and whole-"
            "field forecast samples against the limit and a plain xarray DataLoader."
        ),
    )
    bench.add_argument("--size", default="default", help="smoke, small, default (398 MB), x4")
    bench.add_argument(
        "--layouts", default="all", help="comma-separated layouts or 'all' (first = targets)"
    )
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--time-budget", type=float, default=10.0, help="seconds per peer run")
    bench.add_argument("--memory-limit", default="1GB")
    bench.add_argument("--no-peers", action="store_true", help="skip xbatcher and naive zarr")
    bench.add_argument("--no-scale", action="store_true", help="skip the 4x-store check")
    bench.add_argument(
        "--no-remote", action="store_true", help="skip HTTP (nginx, latency proxy) and S3 (moto)"
    )
    bench.add_argument(
        "--json", default=None, help="also write the results as JSON here ('-': stdout)"
    )
    bench.add_argument("--smoke", action="store_true", help="tiny store, one repetition, quick")
    bench.add_argument(
        "--only",
        choices=["inference"],
        default=None,
        help="run only these rows: 'inference' (domain inference with write-back)",
    )
    bench.add_argument("--cache-dir", default=None, help="where the stores go")
    bench.add_argument(
        "--suite",
        default="all",
        choices=("all", "patches", "weather", "chips"),
        help="patches: 64 x 64 windows on the default store's layouts (+ scale, remote); "
        "weather: whole-field forecast samples (1 and 0.25 degree, ARCO-ERA5 layout) and "
        "small patches on 1-degree chunks; chips: 256 x 256 COG chips against the tile "
        "limit, a plain rasterio loader and torchgeo; all: every suite (default)",
    )
    bench.add_argument(
        "--torchgeo-python",
        default=None,
        help="interpreter of a torchgeo 0.10 environment for the chip suite's peer rows "
        "(default: $EARTHSTREAM_TORCHGEO_PYTHON; unset: those rows are skipped)",
    )
    bench.add_argument(
        "--chip-scenes",
        type=int,
        default=4,
        help="4096 x 4096 COG scenes of the chip suite (issue 13's figures: 16)",
    )
    bench.add_argument(
        "--weather",
        default=None,
        help="comma-separated weather rows (default all): era5-1deg, era5-025, patches-1deg, "
        "multistream-1deg",
    )

    info = command("info", help="describe a Zarr store: variables, dims, chunks, codecs")
    info.add_argument("url", help="local path or URL of the store")

    stats = command(
        "stats",
        help="per-variable (and per-level) count, mean, std, min, max, quantiles, on Dask",
        description=(
            "Reads every chunk of the store (or a selection) once on Dask distributed workers "
            "and writes count, mean, std, min, max and quantiles per variable (and per level "
            "or band) as JSON, for stream.to_torch(normalize=...)."
        ),
    )
    stats.add_argument("url", help="local path or URL of the store")
    stats.add_argument("--variables", default=None, help="comma-separated (default: all)")
    stats.add_argument(
        "--per",
        default=None,
        help="comma-separated dims with separate statistics (default: level,band where "
        "present; '' for none)",
    )
    stats.add_argument(
        "--time",
        default=None,
        help="START:END labels (inclusive), e.g. 2020-01-01:2020-06-30, or positions (end "
        "exclusive), e.g. 0:100",
    )
    stats.add_argument("--workers", type=int, default=2, help="LocalCluster processes")
    stats.add_argument("--threads-per-worker", type=int, default=1)
    stats.add_argument(
        "--scheduler", default=None, help="address of a running scheduler (tcp://...), or 'sync'"
    )
    stats.add_argument(
        "--output", default=None, help="JSON file (default: <store name>.stats.json here)"
    )
    stats.add_argument("--quantiles", default="0.01,0.5,0.99", help="comma-separated levels")
    stats.add_argument("--task-bytes", default="16MB", help="decoded bytes per Dask task")
    stats.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``earthstream`` command; the exit status (see the module's docstring)."""
    args = _parser().parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("EARTHSTREAM_DEBUG", "") not in (
        "",
        "0",
    )
    try:
        return _run(args)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("earthstream: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        else:
            # Reads still in flight when the command gives up (zarr-python gathers
            # several metadata reads; the first failure ends the command) may end while
            # the interpreter exits, and asyncio would log their errors ("Task exception
            # was never retrieved", with a traceback): the error is the one printed here.
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        print(f"earthstream: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, _USAGE_ERRORS) else EXIT_DATA


def _one_line(exc: BaseException) -> str:
    """The error as one line: its message, and for errors that are not ours its type."""
    from ..storage._retry import redact

    message = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, EarthstreamError | OSError):
        hint = " (run with --debug for the traceback)"
        message = f"{type(exc).__name__}: {message}{hint}"
    return redact(message)


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        if args.multimodal:
            from ._demo_multimodal import run_multimodal_demo as run
        else:
            from ._demo import run_demo as run
        return run(
            seconds=args.seconds,
            cache_dir=args.cache_dir,
            batch_size=args.batch_size,
            seed=args.seed,
            small=args.small,
        )
    if args.command == "bench":
        return _bench(args)
    if args.command == "info":
        from .. import open_zarr

        print(open_zarr(args.url))
        return 0
    if args.command == "stats":
        return _stats(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


def _bench(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .._units import parse_bytes
    from .._validate import check_whole
    from ..benchmarks import LAYOUTS, BenchConfig, format_table, run_bench, run_inference_bench
    from ..benchmarks._chips_suite import peer_python
    from ._demo import cache_dir

    layouts = tuple(LAYOUTS) if args.layouts == "all" else tuple(args.layouts.split(","))
    for layout in layouts:
        if layout not in LAYOUTS:
            raise ConfigError(f"--layouts has {layout!r}; use any of {', '.join(LAYOUTS)} or all.")
    config = BenchConfig(
        folder=cache_dir(args.cache_dir) / "bench",
        size="smoke" if args.smoke else args.size,
        layouts=layouts,
        repeats=1 if args.smoke else args.repeats,
        time_budget=1.0 if args.smoke else args.time_budget,
        memory_limit=parse_bytes(args.memory_limit),
        peers=not args.no_peers,
        scale=not args.no_scale,
        remote=not args.no_remote,
        suites=("patches", "weather", "chips") if args.suite == "all" else (args.suite,),
        weather=tuple(args.weather.split(",")) if args.weather else (),
        torchgeo_python=peer_python(args.torchgeo_python),
        chip_scenes=check_whole(args.chip_scenes, "--chip-scenes", minimum=1, maximum=64),
    )
    result = run_inference_bench(config) if args.only == "inference" else run_bench(config)
    if args.json == "-":
        print(json.dumps(result, default=str))
    else:
        print(format_table(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1, default=str))
            print(f"JSON: {args.json}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from ..stats import compute_stats

    def names(text: str | None) -> list[str] | None:
        return None if text is None else [n.strip() for n in text.split(",") if n.strip()]

    sel: dict[str, slice] | None = None
    isel: dict[str, slice] | None = None
    if args.time:
        start, sep, end = args.time.partition(":")
        if not sep:
            raise ConfigError(f"--time {args.time!r}: give START:END (either may be empty).")

        def bound(text: str) -> int | str | None:  # positions if whole numbers, else labels
            text = text.strip()
            if text.lstrip("-").isdigit():
                return int(text)
            if text:
                try:
                    np.datetime64(text)
                except ValueError as exc:
                    raise ConfigError(
                        f"--time {args.time!r}: {text!r} is neither a position nor a date "
                        f"({exc}); write e.g. 2020-01-01:2020-06-30 or 0:100."
                    ) from None
            return text or None

        first, last = bound(start), bound(end)
        if isinstance(first, str) or isinstance(last, str):
            sel = {"time": slice(first, last)}  # labels, both ends inclusive (xarray's sel)
        else:
            isel = {"time": slice(first, last)}
    try:
        quantiles = [float(q) for q in args.quantiles.split(",") if q.strip()]
    except ValueError:
        raise ConfigError(
            f"--quantiles {args.quantiles!r} must be comma-separated numbers in [0, 1], "
            "e.g. 0.01,0.5,0.99."
        ) from None
    stats = compute_stats(
        args.url,
        names(args.variables),
        per=names(args.per),
        sel=sel,
        isel=isel,
        quantiles=quantiles,
        scheduler=args.scheduler,
        n_workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        task_bytes=args.task_bytes,
        progress=not args.no_progress,
    )
    output = args.output
    if output is None:
        name = os.path.basename(str(args.url).rstrip("/")) or "store"
        output = (name[: -len(".zarr")] if name.endswith(".zarr") else name) + ".stats.json"
    path = stats.to_json(Path(output))
    print(stats.table())
    run = stats.run
    mb = run["bytes"] / 1e6
    print(
        f"{mb:,.1f} MB decoded in {run['chunks']:,} chunks ({run['tasks']} tasks) on "
        f"{run['workers']} worker(s) x {run['threads'] // max(1, run['workers'])} thread(s): "
        f"{run['seconds']:.2f} s wall, {mb / run['seconds']:,.1f} MB/s, "
        f"{run['chunks'] / run['seconds']:,.0f} chunks/s (cluster start "
        f"{run['startup_seconds']:.2f} s; {mb / run['compute_seconds']:,.1f} MB/s without it)"
    )
    print(f"written: {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
