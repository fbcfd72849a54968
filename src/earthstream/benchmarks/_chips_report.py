"""The chip suite's targets (issue 13) and its table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._torchgeo_peer import BATCH, CHIP

__all__ = ["chips_targets", "format_chips"]


def chips_targets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 13's chip targets, evaluated on one run's rows."""
    from ._common import _target

    def ours(variant: str) -> dict[str, Any] | None:
        return next(
            (r for r in rows if r["method"] == "earthstream" and r["variant"] == variant), None
        )

    def best_torchgeo(variant: str) -> dict[str, Any] | None:
        mine = [
            r for r in rows if r["method"] == "torchgeo" and r["pair"] == f"stream_chips {variant}"
        ]
        mine = [r for r in mine if r["samples_per_s"]]
        return max(mine, key=lambda r: r["samples_per_s"]) if mine else None

    out = []
    for variant in (
        "Stream grid",
        "Stream shuffle=chunks",
        "stream_chips grid",
        "stream_chips random",
    ):
        row = ours(variant)
        if row is not None:
            out.append(
                _target(f"COG chips, {variant} >= 0.7x tile limit", row["ratio_to_limit"], 0.7)
            )
    for order in ("grid", "random"):
        row, plain = ours(f"stream_chips {order}"), next(
            (r for r in rows if r["method"] == "rasterio" and r["env"] == "earthstream"
             and r["variant"].endswith(order)), None)  # fmt: skip
        if row and plain and row["samples_per_s"] and plain["samples_per_s"]:
            out.append(
                _target(
                    f"COG chips, stream_chips {order} > plain rasterio loader",
                    row["samples_per_s"] / plain["samples_per_s"],
                    1.0,
                )
            )
    for variant, bound in (("random", 3.0), ("labels", 15.0), ("bilinear", 1.5)):
        row, tg = ours(f"stream_chips {variant}"), best_torchgeo(variant)
        if row and tg and row["samples_per_s"]:
            out.append(
                _target(
                    f"stream_chips {variant} >= {bound:g}x torchgeo's best ({tg['variant']})",
                    row["samples_per_s"] / tg["samples_per_s"],
                    bound,
                )
            )
    return out


def format_chips(rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The chip suite's table: chips/s, x limit, CPU per chip, es/this, load."""

    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    head = (
        f"{'method':<12} {'variant':<50} {'chips/s':>8} {'x limit':>8} {'es/this':>8} "
        f"{'CPU ms/chip':>11} {'CPU x lim':>9} {'es CPU/this':>11} {'RSS MB':>7} {'others':>6}"
    )
    lines = [
        f"chips: {summary['scenes']} COGs of {summary['size']}^2 px, 4 x uint16, 512 px tiles, "
        f"{CHIP}x{CHIP} chips, batch {BATCH}; reprojection to {summary['reprojection']['crs']} "
        f"at {summary['reprojection']['res']:.3g}",
        head,
        "-" * len(head),
    ]
    for r in rows:
        lines.append(
            f"{r['method']:<12} {r['variant'][:50]:<50} {fmt(r['samples_per_s'], ',.0f'):>8} "
            f"{fmt(r['ratio_to_limit'], '.2f'):>8} {fmt(r['earthstream_over_this'], '.2f'):>8} "
            f"{fmt(r['cpu_ms_per_chip'], '.2f'):>11} {fmt(r['cpu_ratio_to_limit'], '.2f'):>9} "
            f"{fmt(r.get('earthstream_cpu_over_this'), '.2f'):>11} "
            f"{fmt(r['peak_rss_mb'], '.0f'):>7} {fmt(r['others_busy_cores'], '.1f'):>6}"
        )
    machine = summary.get("machine") or {}
    lines.append(
        "x limit: chips/s over the limit's (epoch chips / time to decode every tile once); "
        "es/this: the paired earthstream row's chips/s over this row's; CPU: process tree "
        "(workers included); others: cores busy with other processes during the slices."
    )
    if machine.get("load_average_1min"):
        lo, hi = machine["load_average_1min"]
        lines.append(
            f"machine: {machine['cpus']} CPUs, 1-min load average {lo:.1f} to {hi:.1f}, other "
            f"processes busy on {machine['others_busy_cores'][0]:.1f} to "
            f"{machine['others_busy_cores'][2]:.1f} cores (median "
            f"{machine['others_busy_cores'][1]:.1f})"
        )
    if summary.get("skipped"):
        lines.append(summary["skipped"])
    check = summary.get("check")
    if check:
        lines.append(_format_check(check))
    return "\n".join(lines)


def _format_check(check: dict[str, Any]) -> str:
    parts = [
        f"{order} {v['equal']}/{v['chips']} chips equal"
        for order, v in check.get("native", {}).items()
    ]
    labels = check.get("labels")
    if labels:
        parts.append(
            f"labels {labels['equal']}/{labels['chips']} masks equal "
            f"({labels['pixels_equal']:.4%} of pixels; "
            f"{labels.get('background_where_labelled', 0)} px left as background)"
        )
    for how, v in check.get("reprojection", {}).items():
        text = (
            f"{how} vs rasterio.warp.reproject: max |diff| {fmt_num(v['max_abs_diff'])} DN, "
            f"mean {fmt_num(v['mean_abs_diff'], '.2f')}, "
            f"equal {fmt_num(v['equal_fraction'], '.1%')}"
        )
        near = v.get("vs_nearest_reproject")
        if near:
            text += f" (vs nearest reproject: max {fmt_num(near['max_abs_diff'])})"
        parts.append(text)
    return "torchgeo chips checked against rasterio: " + "; ".join(parts)


def fmt_num(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)
