"""The report's five figures, each a PNG or a sentence saying why there is none.

Figures are drawn on bare ``matplotlib.figure.Figure`` objects with the Agg canvas, never through
pyplot: no display, no global figure registry to leak between reports, safe in any process.
Time axes are in s or ms (µs for tiny spans), chosen by the span shown.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from emulators.model.units import format_time
from orchestrator.report import data
from orchestrator.report.data import Series

WIDTH_IN = 11.0
DPI = 90
MAX_RANKS = 64  # rows of the timeline: beyond this bars are thinner than a pixel
OP_COLOURS = {"compute": "#4c72b0", "tp": "#dd8452", "pp": "#55a868", "dp": "#c44e52", "ep": "#8172b3"}
POINT_TO_POINT = ("send", "recv")
IDLE_UTILISATION = 0.005  # a direction that never passes 0.5 % (ACKs, pauses) is left out of the plot


@dataclass(frozen=True)
class Plot:
    """A figure of the report: ``png`` is None when the run has nothing to draw, and ``note`` says why."""

    title: str
    png: bytes | None
    note: str = ""


def time_unit(span_ps: int | float) -> tuple[float, str]:
    """Picoseconds per unit of a time axis: s from 2 s of span up, ms down to 0.1 ms, else µs."""
    if span_ps >= 2 * data.PS_PER_S:
        return 1e12, "s"
    if span_ps >= 1e8:
        return 1e9, "ms"
    return 1e6, "µs"


def duration_unit(peak_ps: int | float) -> tuple[float, str]:
    """Picoseconds per unit of an axis of durations: the largest unit in which the peak is 1 or more."""
    for scale, unit in ((1e12, "s"), (1e9, "ms")):
        if peak_ps >= scale:
            return scale, unit
    return 1e6, "µs"


def byte_unit(peak: float) -> tuple[float, str]:
    for scale, unit in ((2.0**30, "GiB"), (2.0**20, "MiB"), (2.0**10, "KiB")):
        if peak >= scale:
            return scale, unit
    return 1.0, "B"


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def _stairs(ax: Axes, values: npt.NDArray[np.float64], edges: npt.NDArray[np.float64], **style: Any) -> None:
    """A value held over each interval ``edges[i]..edges[i + 1]``, drawn as one polyline: what
    ``Axes.stairs`` draws, but a Line2D, which is many times faster to add than its StepPatch."""
    ax.plot(np.repeat(edges, 2)[1:-1], np.repeat(values, 2), **style)


def _mark_faults(ax: Axes, faults: Sequence[dict[str, Any]], scale: float, *, labelled: bool = True) -> None:
    """Dashed grey lines where the scenario changed a link, so a dip can be matched to its cause."""
    for i, fault in enumerate(faults):
        x = fault["at_ps"] / scale
        ax.axvline(x, color="0.45", linestyle="--", linewidth=0.9, zorder=1,
                   label="link change" if i == 0 else None)
        if labelled:
            ax.annotate(f"{fault.get('link', '')} {fault.get('change', '')}".strip(), (x, 1.0),
                        xycoords=("data", "axes fraction"), rotation=90, fontsize=7, color="0.35",
                        ha="right", va="top", xytext=(-2, -2), textcoords="offset points")


# -- 1. per-rank timeline -------------------------------------------------------------------------
def rank_timeline(job: dict[str, Any] | None) -> Plot:
    """One iteration as a Gantt chart: a row per rank, a bar per op, coloured by what it waits on."""
    ranks = data.timeline_ranks(job) if job else []
    ops_total = sum(len(ops) for _, ops in ranks)
    iteration = (job or {}).get("timeline", {}).get("iteration")
    title = "Per-rank timeline" + (f" of iteration {iteration}" if iteration is not None else "")
    if not ops_total:
        return Plot(title, None, "no data: the run has no training job timeline")
    shown = ranks[:MAX_RANKS]
    start = min(op[3] for _, ops in shown for op in ops)
    end = max(op[4] for _, ops in shown for op in ops)
    scale, unit = time_unit(end - start)
    spans: dict[tuple[int, str, bool], list[tuple[float, float]]] = defaultdict(list)
    for row, (_, ops) in enumerate(shown):
        for _label, kind, dim, t0, t1 in ops:
            colour = "compute" if kind == "compute" else (dim or kind)
            spans[(row, colour, kind in POINT_TO_POINT)].append(((t0 - start) / scale, (t1 - t0) / scale))
    fig = Figure(figsize=(WIDTH_IN, max(2.5, 1.4 + 0.22 * len(shown))), dpi=DPI)
    ax = fig.subplots()
    for (row, colour, p2p), bars in spans.items():
        # compute in the upper half of a row, communication in the lower: overlap stays visible
        lane = (row - 0.42, 0.4) if colour == "compute" else (row + 0.02, 0.4)
        ax.broken_barh(bars, lane, facecolors=OP_COLOURS.get(colour, "0.6"),
                       edgecolor="white", linewidth=0.0, hatch="////" if p2p else None)
    step = max(1, len(shown) // 32)
    ax.set_yticks(range(0, len(shown), step), [shown[i][0] for i in range(0, len(shown), step)])
    ax.set_ylim(len(shown) - 0.5, -0.5)  # rank 0 on top
    ax.set_ylabel("rank")
    ax.set_xlabel(f"time since the iteration's first op ({unit}); each row: compute above, communication below")
    present = {colour for _, colour, _ in spans}
    used = [c for c in OP_COLOURS if c in present] + sorted(present - OP_COLOURS.keys())
    handles = [Patch(facecolor=OP_COLOURS.get(c, "0.6"), label=c) for c in used]
    if any(p2p for *_, p2p in spans):
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="////", label="send/recv"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    note = f"first {MAX_RANKS} of {len(ranks)} ranks" if len(ranks) > MAX_RANKS else ""
    return Plot(title, _png(fig), note)


# -- 2. iteration times ---------------------------------------------------------------------------
def iteration_times(job: dict[str, Any] | None, faults: Sequence[dict[str, Any]],
                    qp_events: Sequence[dict[str, Any]] = ()) -> Plot:
    """Each iteration as a bar spanning its time on the x axis, as tall as it took: a fault, a QP
    timeout or error, an interruption and the slow iterations around them line up on one time axis;
    the baseline's iteration time (with --baseline) is a line across."""
    title = "Iteration times"
    iterations = (job or {}).get("iterations") or []
    if not iterations:
        return Plot(title, None, "no data: the run has no training job iterations")
    assert job is not None
    interruptions = job.get("interruptions") or []
    end_ps = max([it["end_ps"] for it in iterations] + [i.get("resumed_ps") or 0 for i in interruptions])
    scale, unit = time_unit(end_ps)
    y_scale, y_unit = duration_unit(max(it["time_ps"] for it in iterations))
    fig = Figure(figsize=(WIDTH_IN, 4.0), dpi=DPI)
    ax = fig.subplots()
    for retried in (False, True):
        chosen = [it for it in iterations if (it.get("attempt", 0) > 0) == retried]
        if chosen:
            ax.bar([it["start_ps"] / scale for it in chosen], [it["time_ps"] / y_scale for it in chosen],
                   width=[(it["end_ps"] - it["start_ps"]) / scale for it in chosen], align="edge",
                   color="#dd8452" if retried else "#4c72b0", edgecolor="white", linewidth=0.5,
                   label="retried attempt" if retried else "iteration")
    if len(iterations) <= 40:
        for it in iterations:
            ax.annotate(str(it["iteration"]), ((it["start_ps"] + it["end_ps"]) / 2 / scale, it["time_ps"] / y_scale),
                        ha="center", va="bottom", fontsize=7)
    estimate = (job.get("estimate") or {}).get("iteration_time_ps")
    if estimate:
        ax.axhline(estimate / y_scale, color="0.2", linestyle=":", linewidth=1, label="analytic estimate")
    marks = data.iteration_markers(job, qp_events)
    if marks["baseline_ps"]:
        ax.axhline(marks["baseline_ps"] / y_scale, color="#55a868", linestyle="-", linewidth=1.2, label="baseline")
    for key, label, colour, marker in (("timeouts_ps", "QP timeout", "#8172b3", "v"),
                                       ("qp_errors_ps", "QP error", "#c44e52", "x")):
        if marks[key]:
            ax.plot([t / scale for t in marks[key]], [0.0] * len(marks[key]), linestyle="none", marker=marker,
                    color=colour, markersize=7, clip_on=False, zorder=5, label=f"{label} ({len(marks[key])})")
    for i, cut in enumerate(interruptions):
        ax.axvline(cut["at_ps"] / scale, color="#c44e52", linewidth=1.5, label="interruption" if i == 0 else None)
        resumed = cut.get("resumed_ps")
        ax.axvspan(cut["at_ps"] / scale, (resumed if resumed is not None else end_ps) / scale,
                   color="#c44e52", alpha=0.12, linewidth=0, label="lost time" if i == 0 else None)
    _mark_faults(ax, faults, scale)
    ax.set_xlim(0, end_ps / scale * 1.01)
    ax.set_xlabel(f"virtual time ({unit})")
    ax.set_ylabel(f"iteration time ({y_unit})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return Plot(title, _png(fig))


# -- 3. link utilisation --------------------------------------------------------------------------
def link_utilisation(loads: list[data.LinkLoad], faults: Sequence[dict[str, Any]], end_ps: int, *,
                     no_links_reason: str = "") -> Plot:
    """The links that carried the most bytes, both directions (a→z solid, z→a dashed) in one colour."""
    title = f"Link utilisation (busiest {data.TOP_N} links)"
    drawn = [(i, load) for i, name in enumerate(data.busiest_links(loads)) for load in loads
             if load.link == name and load.utilisation.max(initial=0.0) >= IDLE_UTILISATION]
    if not drawn:
        return Plot(title, None, no_links_reason or "no data: no sampled link carried traffic")
    scale, unit = time_unit(end_ps)
    fig = Figure(figsize=(WIDTH_IN, 4.0), dpi=DPI)
    ax = fig.subplots()
    for i, load in drawn:
        _stairs(ax, load.utilisation * 100, load.edges_ps / scale, color=f"C{i}", linewidth=1.1,
                linestyle="-" if load.direction == "a->z" else "--", label=f"{load.link} {load.direction}")
    peak = max(1.0, *(float(load.utilisation.max()) for _, load in drawn))
    _mark_faults(ax, faults, scale, labelled=False)
    ax.set_ylim(0, max(105.0, peak * 105))
    ax.set_xlim(0, end_ps / scale)
    ax.set_xlabel(f"virtual time ({unit})")
    ax.set_ylabel("utilisation (% of line rate)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    return Plot(title, _png(fig))


# -- 4. buffers and queues ------------------------------------------------------------------------
def buffer_depth(buffers: list[Series], queues: list[Series], faults: Sequence[dict[str, Any]], end_ps: int) -> Plot:
    """Shared buffer occupancy of the fullest switches/gateways, and the deepest egress queues."""
    title = "Buffer and queue depth"
    panels = [(label, found) for label, found in (("shared buffer", data.busiest(buffers, cumulative=False)),
                                                  ("egress queue", data.busiest(queues, cumulative=False))) if found]
    if not panels:
        return Plot(title, None, "no data: no switch or gateway buffered anything at a sample")
    scale, unit = time_unit(end_ps)
    fig = Figure(figsize=(WIDTH_IN, 2.0 + 2.4 * len(panels)), dpi=DPI)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, found) in zip(axes, panels, strict=True):
        b_scale, b_unit = byte_unit(max(float(s.values.max()) for s in found))
        for s in found:
            t_ps, level = data.thin_level(s.t_ps, s.values)
            ax.step(t_ps / scale, level / b_scale, where="post", linewidth=1.0, label=s.where)
        _mark_faults(ax, faults, scale, labelled=False)
        ax.set_ylabel(f"{label} ({b_unit})")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return _stacked(fig, axes, title, end_ps / scale,
                    f"virtual time ({unit}); levels at each sample, the peak of each bucket when thinned")


# -- 5. pauses and retransmits --------------------------------------------------------------------
def pauses_and_retransmits(panels: list[tuple[str, list[Series], bool]], faults: Sequence[dict[str, Any]],
                           end_ps: int) -> Plot:
    """Per-interval increments of cumulative loss-recovery counters, one panel per counter;
    ``panels`` are (label, series, counts bytes)."""
    title = "PFC pauses, retransmits and QP errors"
    shown = [(label, top, in_bytes) for label, found, in_bytes in panels
             if (top := data.busiest(found, cumulative=True))]
    if not shown:
        sampled = any(found for _, found, _ in panels)
        return Plot(title, None, "none: no pause, retransmit or QP error during the run" if sampled
                    else "no data: no device sampled these counters")
    scale, unit = time_unit(end_ps)
    fig = Figure(figsize=(WIDTH_IN, 2.0 + 2.2 * len(shown)), dpi=DPI)
    axes = fig.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, found, in_bytes) in zip(axes, shown, strict=True):
        grown = []
        interval = 0  # the plotted interval: the sample interval, or a multiple of it once thinned
        for s in found:
            t_ps, cumulative = data.thin_cumulative(s.t_ps, s.values)
            grown.append((s.device, t_ps, np.diff(cumulative)))
            interval = max(interval, int(t_ps[1] - t_ps[0]))
        peak = max(float(step.max()) for *_, step in grown)
        y_scale, y_unit = byte_unit(peak) if in_bytes else (1.0, "")
        for device, edges_ps, step in grown:
            _stairs(ax, step / y_scale, edges_ps / scale, linewidth=1.0, label=device)
        _mark_faults(ax, faults, scale, labelled=False)
        unit_text = f" ({y_unit})" if y_unit else ""
        ax.set_ylabel(f"{label}{unit_text}\nper {format_time(interval)}", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return _stacked(fig, axes, title, end_ps / scale, f"virtual time ({unit})")


def _stacked(fig: Figure, axes: Any, title: str, end: float, xlabel: str) -> Plot:
    """Finish panels stacked over one time axis: the title on top, the axis at the bottom."""
    axes[0].set_title(title)
    axes[-1].set_xlim(0, end)
    axes[-1].set_xlabel(xlabel)
    fig.tight_layout()
    return Plot(title, _png(fig))
