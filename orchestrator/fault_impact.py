"""What each fault did to the training job, and which iteration suffered most and why.

From results.json alone (so ``testbed report`` can redo it): the faults with what their links carried
and lost while each was in force (results.py), the QP events, the job's iterations and interruptions.

- A fault (a scenario ``faults:`` entry, one or more link changes at one instant) falls in the
  iteration that was running when it applied; it hit traffic if its links carried or lost any while
  it was in force (frames lost: on the wire when it went down, sent into it while down, dropped by
  the nodes at its ends while they switched protection), or its iteration took longer than the
  reference by more than a thousandth. Faults that fall in one iteration share its cost
  (``shared_with``). A QP timeout or error counts against the latest fault at most a round trip after
  the QP's last progress (what it sent then was lost, so the fault came before it came back, and a
  repair after that is not the cause); an interruption against the latest fault at or before it.
- An iteration's cost is its time over the reference: the baseline's median iteration with
  ``--baseline``, else the median of the run's undisturbed iterations (no fault, timeout or error
  in them); without either there is no reference and no cost. A fault's cost is the cost of the
  iteration it fell in plus the time lost to the interruptions it caused.
- The worst iteration is the longest; its causes are the faults that applied in it, those that
  degrade a link (down, a BER, a lower rate, a longer path) and were still in force (until their
  links' next change), and the timeouts, QP errors and interruptions in it.
"""

from __future__ import annotations

import statistics
from typing import Any

from emulators.model.units import format_time

TRAFFIC_KEYS = ("tx_bytes", "lost_frames", "down_drop_frames", "rx_corrupt_packets", "gap_frames")
ANALYSIS_KEYS = ("faults", "worst_iteration", "reference_iteration_ps", "reference")  # what analyse_faults adds
ITERATION_ANALYSIS_KEYS = ("cost_ps", "equivalent_compute")
MAX_PS = 2**63  # virtual time is a signed 64-bit count of picoseconds where it crosses the wire


def measured(job: dict[str, Any]) -> dict[str, Any]:
    """A job's results without what :func:`analyse_faults` derived from them: what two runs with
    different faults can be compared on."""
    out = {key: value for key, value in job.items() if key not in ANALYSIS_KEYS}
    out["iterations"] = [{k: v for k, v in it.items() if k not in ITERATION_ANALYSIS_KEYS}
                         for it in job.get("iterations", [])]
    return out


def analyse_faults(results: dict[str, Any]) -> None:
    """Add ``job.faults``, ``job.worst_iteration`` and ``job.reference_iteration_ps`` (and each
    iteration's ``equivalent_compute`` against a baseline) to ``results``; idempotent."""
    job = results.get("job")
    if not job or job.get("collective_test"):
        return
    iterations = job.get("iterations") or []
    events = [e for e in results.get("qp_events") or [] if e.get("kind") in ("timeout", "qp_error")]
    groups = _fault_groups(results.get("faults") or [], results.get("links") or {})
    starts = sorted((group["at_ps"], group["index"]) for group in groups.values())
    interruptions = job.get("interruptions") or []

    def cause_of(at_ps: int) -> int | None:
        """The latest fault (by index) at or before ``at_ps``."""
        before = [index for at, index in starts if at <= at_ps]
        return before[-1] if before else None

    for event in events:
        index = cause_of(int(event.get("since_ps", event["at_ps"])) + int(event.get("rtt_ps", 0)))
        if index is not None:
            groups[index]["qp_" + ("timeouts" if event["kind"] == "timeout" else "errors")] += 1
    for stop in interruptions:
        index = cause_of(int(stop["at_ps"]))
        if index is not None:
            groups[index]["interruptions"] += 1
            groups[index]["lost_ps"] += int(stop.get("lost_ps") or 0)

    disturbed = set()
    for it in iterations:
        inside = [g for g in groups.values() if it["start_ps"] <= g["at_ps"] < it["end_ps"]]
        stalls = [e for e in events if it["start_ps"] <= e["at_ps"] < it["end_ps"]]
        if inside or stalls:
            disturbed.add((it["attempt"], it["iteration"]))
    baseline = whole_ps((job.get("baseline") or {}).get("iteration_time_ps"))
    calm = [it["time_ps"] for it in iterations if (it["attempt"], it["iteration"]) not in disturbed]
    reference = int(baseline) if baseline else (int(statistics.median(calm)) if calm else None)
    job["reference_iteration_ps"] = reference
    job["reference"] = "baseline's median" if baseline else ("median of undisturbed iterations" if calm else None)
    for it in iterations:
        it["cost_ps"] = it["time_ps"] - reference if reference is not None else None
        if baseline:
            it["equivalent_compute"] = baseline / it["time_ps"] if it["time_ps"] > 0 else None

    for group in groups.values():
        hit = next((it for it in iterations if it["start_ps"] <= group["at_ps"] < it["end_ps"]), None)
        group["iteration"] = hit["iteration"] if hit else None
        group["attempt"] = hit["attempt"] if hit else None
        if hit is None:
            group["when"] = _outside(group["at_ps"], iterations, interruptions)
        traffic = group["traffic"]
        group["frames_lost"] = traffic["lost_frames"] + traffic["down_drop_frames"] + traffic["gap_frames"]
        if hit is None:
            group["cost_ps"] = group["lost_ps"]
        else:
            group["cost_ps"] = None if reference is None else hit["time_ps"] - reference + group["lost_ps"]
        slower = bool(group["cost_ps"] and reference and group["cost_ps"] > reference // 1000)
        group["hit_traffic"] = bool(traffic["tx_bytes"] or group["frames_lost"] or traffic["rx_corrupt_packets"]
                                    or group["qp_timeouts"] or group["qp_errors"] or group["interruptions"] or slower)
    for group in groups.values():
        group["shared_with"] = [other["index"] for other in groups.values() if other is not group
                                and other["iteration"] is not None and other["iteration"] == group["iteration"]
                                and other["attempt"] == group["attempt"]]
    job["faults"] = [groups[index] for _, index in starts]
    job["worst_iteration"] = _worst(iterations, list(groups.values()), events, interruptions, reference, baseline)


def _fault_groups(faults: list[dict[str, Any]], links: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The scenario's faults by index: each entry's link changes, at one instant."""
    groups: dict[int, dict[str, Any]] = {}
    for entry in faults:
        index = int(entry.get("index", len(groups)))
        group = groups.setdefault(index, {
            "index": index, "at_ps": int(entry["at_ps"]), "changes": [], "links": [],
            "traffic": dict.fromkeys(TRAFFIC_KEYS, 0),
            "applied": False, "degrades": False, "qp_timeouts": 0, "qp_errors": 0, "interruptions": 0,
            "lost_ps": 0})
        group["changes"].append(f"{entry['link']} {entry['change']}")
        group["links"].append(entry["link"])
        group["degrades"] = group["degrades"] or _degrades(entry, links.get(entry["link"], {}))
        traffic = entry.get("traffic")
        if traffic is not None:
            group["applied"] = True
            for key in TRAFFIC_KEYS:
                group["traffic"][key] += int(traffic.get(key, 0))
    for group in groups.values():  # in force until one of its links changes again
        later = [other["at_ps"] for other in groups.values() if other["at_ps"] > group["at_ps"]
                 and set(other["links"]) & set(group["links"])]
        group["until_ps"] = min(later) if later else None
    return groups


def _degrades(entry: dict[str, Any], link: dict[str, Any]) -> bool:
    """Whether a link change makes the link worse than the scenario built it."""
    return bool(entry.get("state") == "down" or entry.get("ber")
                or entry.get("rate_bps", link.get("rate_bps", 0)) < link.get("rate_bps", 0)
                or entry.get("length_mm", link.get("length_mm", 0)) > link.get("length_mm", 0))


def _outside(at_ps: int, iterations: list[dict[str, Any]], interruptions: list[dict[str, Any]]) -> str:
    """Where a fault fell that no completed iteration spans."""
    if not iterations or at_ps < min(it["start_ps"] for it in iterations):
        return "before the first iteration"
    if any(stop["at_ps"] <= at_ps < (stop.get("resumed_ps") or stop["aborted_ps"]) for stop in interruptions):
        return "while the job was down"
    if at_ps >= max(it["end_ps"] for it in iterations):
        return "after the last iteration"
    return "in an attempt that was aborted"


def _worst(iterations: list[dict[str, Any]], groups: list[dict[str, Any]], events: list[dict[str, Any]],
           interruptions: list[dict[str, Any]], reference: int | None, baseline: int | None) -> dict[str, Any] | None:
    if not iterations:
        return None
    worst = max(iterations, key=lambda it: (it["time_ps"], -it["end_ps"]))
    inside = [g for g in groups if worst["start_ps"] <= g["at_ps"] < worst["end_ps"]]
    before = [g for g in groups if g["at_ps"] < worst["start_ps"] and g["applied"] and g["degrades"]
              and (g["until_ps"] is None or g["until_ps"] > worst["start_ps"])]
    stalls = [e for e in events if worst["start_ps"] <= e["at_ps"] < worst["end_ps"]]
    causes = [f"fault {g['index']} at {format_time(g['at_ps'])} ({'; '.join(g['changes'])})" for g in inside]
    causes += [f"fault {g['index']} in force since {format_time(g['at_ps'])} ({'; '.join(g['changes'])})"
               for g in before]
    timeouts = [e for e in stalls if e["kind"] == "timeout"]
    if timeouts:
        causes.append(f"{len(timeouts)} QP timeouts")
    errors = [e for e in stalls if e["kind"] == "qp_error"]
    if errors:
        causes.append(f"{len(errors)} QP errors")
    restarted = [s for s in interruptions if s.get("resumed_ps") == worst["start_ps"]]
    if restarted:
        causes.append(f"the first iteration after the restart from {restarted[0]['kind']}")
    out = {key: worst[key] for key in ("iteration", "attempt", "start_ps", "end_ps", "time_ps")}
    out |= {"cost_ps": None if reference is None else worst["time_ps"] - reference,
            "faults": [g["index"] for g in inside], "in_force": [g["index"] for g in before],
            "qp_timeouts": len(timeouts), "qp_errors": len(errors), "causes": causes}
    if baseline:
        out["equivalent_compute"] = baseline / worst["time_ps"] if worst["time_ps"] > 0 else None
    return out


def whole_ps(value: Any) -> int | None:
    """A time read back from results.json (edited by hand, perhaps), such as a baseline's iteration:
    None unless it is a positive whole number of picoseconds, so no ratio with it is negative or infinite."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < MAX_PS:
        return None
    return value
