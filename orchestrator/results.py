"""Assembling results.json from what the hosts measured.

Everything outside ``run`` depends only on the scenario and the seed: it is identical in every
partition and backend, and on every repetition. ``run`` says how this run was executed (partition,
hosts, windows, wall seconds).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from emulators.model.faults import LinkChange
from emulators.model.scenario import Scenario
from emulators.otn.node import capacity_map
from emulators.runtime import LINK_TALLIES
from orchestrator.fault_impact import analyse_faults
from orchestrator.job_results import job_results
from orchestrator.partition import Plan

RESULTS_SCHEMA = "aicn-testbed/results/v0"
MAX_JSON_BYTES = 1 << 30  # the most of a results.json (or inputs.json) read back: beyond, it is not ours


def assemble(scenario: Scenario, plan: Plan, backend: str, host_results: dict[str, dict[str, Any]], *,
             windows: int, wall_seconds: float, end_ps: int, error: str | None = None,
             failed_host: str | None = None) -> dict[str, Any]:
    devices: dict[str, Any] = {}
    timeseries: dict[str, Any] = {}
    in_flight: dict[str, dict[str, int]] = {}
    events = 0
    for hr in host_results.values():
        devices.update(hr["devices"])
        timeseries.update(hr["timeseries"])
        events += hr["events"]
        for flow, v in hr["in_flight"].items():
            t = in_flight.setdefault(flow, {"frames": 0, "bytes": 0})
            t["frames"] += v["frames"]
            t["bytes"] += v["bytes"]
    wan = {"capacity_map": capacity_map(scenario)} if any(d.kind == "otn" for d in scenario.devices) else None
    job = job_results(scenario, devices)
    results = {
        "schema": RESULTS_SCHEMA,
        "status": "failed" if error else "ok",
        "error": error,
        "scenario": {"name": scenario.name, "source": scenario.source, "seed": scenario.seed,
                     "duration_ps": scenario.duration_ps},
        "virtual_end_ps": end_ps,
        "events": events,
        "flows": {f.name: _flow(f.name, f.src.device, f.dst.device, devices, in_flight) for f in scenario.flows},
        "qp_events": sorted(
            ({"device": name} | e for name, d in devices.items() for e in d.get("events", [])),
            key=lambda e: (e["at_ps"], e["flow"], e["kind"]),
        ),
        **({"job": job} if job is not None else {}),
        "devices": {name: devices[name] for name in sorted(devices)},
        **({"wan": wan} if wan is not None else {}),
        "links": {link.name: {"a": str(link.a), "z": str(link.z), "rate_bps": link.rate_bps,
                              "length_mm": link.length_mm} for link in scenario.links},
        "faults": _faults(scenario, host_results),
        "timeseries": {name: timeseries[name] for name in sorted(timeseries)},
        "run": {
            "partition": plan.mode,
            "backend": backend,
            "hosts": {h: list(d) for h, d in plan.hosts.items()},
            "lookahead_ps": plan.lookahead_ps,
            "cut_links": list(plan.cut_links),
            "windows": windows,
            "wall_seconds": round(wall_seconds, 6),
            "missing_hosts": sorted(set(plan.hosts) - set(host_results)),
            "failed_host": failed_host,
        },
    }
    analyse_faults(results)
    return results


def _flow(name: str, src: str, dst: str, devices: dict[str, Any], in_flight: dict[str, Any]) -> dict[str, Any]:
    tx = devices.get(src, {}).get("flows_tx", {}).get(name)
    rx = devices.get(dst, {}).get("flows_rx", {}).get(name)
    flow: dict[str, Any] = {"src": src, "dst": dst}
    if tx is not None and tx.get("transport") == "rdma":
        flow.update(tx)
        flow.update(rx or {"rx_payload_bytes": 0})
        # a message is conserved when every byte arrived exactly once (counted at the receiver)
        flow["undelivered_bytes"] = tx["message_bytes"] - flow["rx_payload_bytes"]
        return flow
    if tx is None or rx is None:  # a host of this flow was lost: say so instead of guessing
        flow["incomplete"] = True
        flow.update(tx or {})
        flow.update(rx or {})
        return flow
    pending = in_flight.get(name, {"frames": 0, "bytes": 0})
    flow.update(tx)
    flow.update(rx)
    flow["in_flight_frames"] = pending["frames"]
    flow["in_flight_bytes"] = pending["bytes"]
    delivered_or_lost = tx["tx_bytes"] - pending["bytes"]
    lost_bytes = delivered_or_lost - rx["rx_good_bytes"]
    flow["lost_bytes"] = lost_bytes
    flow["loss_ratio"] = lost_bytes / delivered_or_lost if delivered_or_lost else 0.0
    # conservation: every byte offered is received, dropped, lost on a dead link or still in flight
    flow["unaccounted_bytes"] = tx["tx_bytes"] - (rx["rx_bytes"] + tx["tx_drop_bytes"]
                                                  + rx["lost_in_flight_bytes"] + pending["bytes"])
    return flow


def _faults(scenario: Scenario, host_results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every change on the timeline, with what its link carried (``tx_bytes``) and lost while it was
    in force: from when it applied to the link's next change, or the run's end (both ends summed)."""
    marks: dict[tuple[int, str], dict[str, int]] = {}
    ends: dict[str, dict[str, int]] = {}
    for hr in host_results.values():
        for mark in hr.get("fault_marks", []):
            _add(marks.setdefault((mark["index"], mark["link"]), {}), mark["tallies"])
        for link, tallies in hr.get("link_tallies", {}).items():
            _add(ends.setdefault(link, {}), tallies)
    applied = sorted((f.at_ps, f.index, f.link) for f in scenario.faults if (f.index, f.link) in marks)
    out = []
    for fault in scenario.faults:
        entry = _fault(fault)
        start = marks.get((fault.index, fault.link))
        if start is not None:
            later = [marks[(index, link)] for at, index, link in applied
                     if link == fault.link and (at, index) > (fault.at_ps, fault.index)]
            stop = later[0] if later else ends.get(fault.link, start)
            entry["traffic"] = {name: stop.get(name, 0) - start.get(name, 0) for name in LINK_TALLIES}
        out.append(entry)
    return out


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for name, value in more.items():
        total[name] = total.get(name, 0) + value


def _fault(fault: LinkChange) -> dict[str, Any]:
    return {"at_ps": fault.at_ps, "index": fault.index, "link": fault.link, "change": fault.describe(),
            fault.field: fault.value}


def deterministic_view(results: dict[str, Any]) -> dict[str, Any]:
    """The part of results.json that must not depend on partition, backend or wall clock."""
    return {k: v for k, v in results.items() if k != "run"}


def null_non_finite(value: Any, path: str = "") -> list[str]:
    """Replace every NaN and infinity inside ``value`` (dicts and lists) by None, in place, since JSON
    holds neither; the key paths replaced, like ``job.iterations[2].equivalent_compute``."""
    replaced = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)
        if isinstance(item, float) and not math.isfinite(item):
            value[key] = None
            replaced.append(where)
        elif isinstance(item, tuple) and (inside := null_non_finite(copy := list(item), where)):
            value[key] = copy  # a tuple cannot change in place; JSON writes it as a list anyway
            replaced += inside
        else:
            replaced += null_non_finite(item, where)
    return replaced


def read_json(path: Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON file the testbed wrote (results.json, inputs.json), read with bounds: a regular file of at
    most ``max_bytes`` and finite numbers only. ValueError saying what is wrong (OSError to read it)."""
    if not path.is_file():  # not a device, a FIFO or a directory: they can be endless or block
        raise ValueError(f"{path} is not a regular file" if path.exists() else f"no {path.name} in {path.parent}")
    with path.open("rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path} is larger than {max_bytes >> 20} MiB, more than a run writes")
    try:
        return json.loads(data, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (bad byte at offset {e.start})") from None
    except RecursionError:
        raise ValueError(f"{path} nests deeper than any results do") from None
    except ValueError as e:  # a NaN, an infinity, an integer of too many digits
        raise ValueError(f"{path} {e}") from None


def _no_constant(name: str) -> float:
    raise ValueError(f"holds {name}, which results never contain")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"holds {text}, too large for a number in results")
    return value
