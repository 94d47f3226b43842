"""What the report shows, computed from results.json: pure functions of the results, no I/O, no plots.

Counters in ``timeseries`` are of two sorts, and they are reduced differently:

- cumulative (``tx_bytes``, ``pfc_xoff_sent``, ``rdma_retx_bytes``): only differences mean something;
  thinning them keeps every difference exact (a coarser interval averages, it never invents);
- instantaneous (``buffer_bytes``, ``queue_bytes``): a sample is a level; thinning keeps each
  bucket's peak, because a queue's peak is what a reader looks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from emulators.registry import DEVICE_KINDS

PS_PER_S = 10**12
PLOT_POINTS = 1500  # samples per plotted line: more than a figure's pixel width adds nothing
TOP_N = 8
BUFFERED_KINDS = tuple(name for name, kind in DEVICE_KINDS.items() if kind.buffer_plot)  # buffers worth a plot

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# (label, where the counter lives, counter): every way the testbed loses a frame
LOSS_COUNTERS = (
    ("egress buffer full", "port", "drop_frames"),
    ("sent on a down link", "port", "down_drop_frames"),
    ("on the wire at a link failure", "port", "lost_frames"),
    ("corrupted by bit errors", "port", "rx_corrupt_packets"),
    ("switch buffer full", "device", "drop_buffer_frames"),
    ("headroom exceeded", "device", "drop_headroom_frames"),
    ("lossy class over threshold", "device", "drop_lossy_frames"),
    ("unroutable", "device", "no_route_frames"),
    ("protection switch gap", "device", "protection_gap_frames"),
)


@dataclass(frozen=True)
class Link:
    """One link as the report needs it: the two ends whose tx counters carry its two directions."""

    name: str
    a: str  # "device/port"
    z: str
    rate_bps: int


@dataclass(frozen=True)
class LinkLoad:
    """One direction of a link: ``utilisation[i]`` is its mean over ``edges_ps[i]..edges_ps[i + 1]``."""

    link: str
    direction: str  # "a->z" or "z->a"
    edges_ps: IntArray
    utilisation: FloatArray
    total_bytes: int


@dataclass(frozen=True)
class Series:
    """One counter of one device over time."""

    device: str
    counter: str  # "buffer_bytes", or "<port>.queue_bytes" for a port's
    t_ps: IntArray
    values: FloatArray

    @property
    def where(self) -> str:
        """The device, or "device/port" for a port's counter: how a legend names the line."""
        port, dot, _ = self.counter.partition(".")
        return f"{self.device}/{port}" if dot else self.device


# -- headline figures -----------------------------------------------------------------------------
def frames_lost(results: dict[str, Any]) -> dict[str, int]:
    """Frames lost anywhere in the network, by cause in ``LOSS_COUNTERS`` order (causes with none are
    left out)."""
    devices = list(results.get("devices", {}).values())
    totals: dict[str, int] = {}
    for label, where, counter in LOSS_COUNTERS:
        if where == "port":
            count = sum(int(port.get(counter, 0)) for d in devices for port in d.get("ports", {}).values())
        else:
            count = sum(int(d.get("counters", {}).get(counter, 0)) for d in devices)
        if count:
            totals[label] = count
    return totals


def retransmitted_bytes(results: dict[str, Any]) -> int:
    """Bytes that RDMA NICs sent more than once (go-back-N or selective repeat)."""
    return sum(int(d.get("counters", {}).get("rdma_retx_bytes", 0)) for d in results.get("devices", {}).values())


# -- time series ----------------------------------------------------------------------------------
def series(results: dict[str, Any], device: str, counter: str) -> Series | None:
    """A device's counter over time, or None when the run did not sample it."""
    sampled = results.get("timeseries", {}).get(device)
    if not sampled or counter not in sampled or "t_ps" not in sampled:
        return None
    t_ps = np.asarray(sampled["t_ps"], dtype=np.int64)
    values = np.asarray(sampled[counter], dtype=np.float64)
    if len(t_ps) != len(values) or len(t_ps) == 0:
        return None
    return Series(device, counter, t_ps, values)


def device_series(results: dict[str, Any], counter: str, kinds: tuple[str, ...] | None = None) -> list[Series]:
    """``counter`` of every device that sampled it (of the given kinds), in device order."""
    kind_of = {name: d.get("kind") for name, d in results.get("devices", {}).items()}
    found = []
    for device in results.get("timeseries", {}):
        if kinds is not None and kind_of.get(device) not in kinds:
            continue
        s = series(results, device, counter)
        if s is not None:
            found.append(s)
    return found


def port_series(results: dict[str, Any], counter: str, kinds: tuple[str, ...] | None = None) -> list[Series]:
    """``<port>.counter`` of every port that sampled it; ``Series.counter`` is ``<port>.counter``."""
    kind_of = {name: d.get("kind") for name, d in results.get("devices", {}).items()}
    found = []
    suffix = "." + counter
    for device, sampled in results.get("timeseries", {}).items():
        if kinds is not None and kind_of.get(device) not in kinds:
            continue
        for name in sampled:
            if name.endswith(suffix):
                s = series(results, device, name)
                if s is not None:
                    found.append(s)
    return found


def utilisation(t_ps: IntArray, tx_bytes: FloatArray, rate_bps: int) -> FloatArray:
    """Mean utilisation of a port over each of the ``len(t_ps) - 1`` sample intervals:
    Δbytes·8 / Δt / rate, where 1.0 is line rate."""
    capacity_bits = np.diff(t_ps).astype(np.float64) * (rate_bps / PS_PER_S)
    bits = np.diff(tx_bytes) * 8.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(capacity_bits > 0, bits / capacity_bits, 0.0)


def thin_cumulative(t_ps: IntArray, cumulative: FloatArray, points: int = PLOT_POINTS) -> tuple[IntArray, FloatArray]:
    """Every k-th sample (and the last) of a cumulative counter: differences stay exact, just coarser."""
    n = len(t_ps)
    if n <= points + 1:
        return t_ps, cumulative
    step = -(-(n - 1) // points)
    keep = np.arange(0, n, step)
    if keep[-1] != n - 1:
        keep = np.append(keep, n - 1)
    return t_ps[keep], cumulative[keep]


def thin_level(t_ps: IntArray, level: FloatArray, points: int = PLOT_POINTS) -> tuple[IntArray, FloatArray]:
    """A level (queue, buffer) thinned to ``points`` buckets, each shown by its peak at its start."""
    n = len(t_ps)
    if n <= points:
        return t_ps, level
    starts = np.arange(0, n, -(-n // points))
    return t_ps[starts], np.maximum.reduceat(level, starts)


def busiest(found: list[Series], top: int = TOP_N, *, cumulative: bool) -> list[Series]:
    """The ``top`` series with the largest total (cumulative counters) or peak (levels), leaving out
    series that never moved: a flat zero line only hides the ones that matter."""
    def weight(s: Series) -> float:
        return float(s.values[-1] - s.values[0]) if cumulative else float(s.values.max())

    moving = [s for s in found if weight(s) > 0]
    return sorted(moving, key=lambda s: (-weight(s), s.device, s.counter))[:top]


# -- links ----------------------------------------------------------------------------------------
def links(results: dict[str, Any]) -> dict[str, Link]:
    """The links of the run from ``results["links"]`` (name -> a, z, rate_bps)."""
    return {name: Link(name, spec["a"], spec["z"], int(spec["rate_bps"]))
            for name, spec in results.get("links", {}).items()}


def link_loads(results: dict[str, Any], known: dict[str, Link], *, points: int | None = None) -> list[LinkLoad]:
    """Both directions of every link whose ends were sampled. ``points`` thins the series for
    plotting; without it every sample interval is kept (for the CSV)."""
    loads = []
    for link in known.values():
        for direction, end in (("a->z", link.a), ("z->a", link.z)):
            device, _, port = end.partition("/")
            sent = series(results, device, f"{port}.tx_bytes")
            if sent is None or len(sent.t_ps) < 2:
                continue
            t_ps, tx = (sent.t_ps, sent.values) if points is None else thin_cumulative(sent.t_ps, sent.values, points)
            used = utilisation(t_ps, tx, link.rate_bps)
            loads.append(LinkLoad(link.name, direction, t_ps, used, int(sent.values[-1] - sent.values[0])))
    return loads


def busiest_links(loads: list[LinkLoad], top: int = TOP_N) -> list[str]:
    """Names of the ``top`` links that carried the most bytes (both directions together)."""
    carried: dict[str, int] = {}
    for load in loads:
        carried[load.link] = carried.get(load.link, 0) + load.total_bytes
    ranked = sorted((name for name, b in carried.items() if b > 0), key=lambda n: (-carried[n], n))
    return ranked[:top]


# -- the training job -----------------------------------------------------------------------------
def timeline_ranks(job: dict[str, Any]) -> list[tuple[str, list[list[Any]]]]:
    """The timeline's ranks in numeric order (keys are strings in JSON)."""
    ranks = job.get("timeline", {}).get("ranks", {})
    return sorted(ranks.items(), key=lambda item: (not item[0].isdigit(), int(item[0]) if item[0].isdigit()
                                                   else 0, item[0]))


def iteration_markers(job: dict[str, Any], qp_events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the iteration plot marks besides the faults: when QPs timed out and errored, and the
    baseline's iteration time (None without --baseline)."""
    return {
        "timeouts_ps": [e["at_ps"] for e in qp_events if e.get("kind") == "timeout"],
        "qp_errors_ps": [e["at_ps"] for e in qp_events if e.get("kind") == "qp_error"],
        "baseline_ps": (job.get("baseline") or {}).get("iteration_time_ps"),
    }
