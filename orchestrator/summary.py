"""The text summary of a run's results, and of a scenario's estimate, as `testbed` prints them."""

from __future__ import annotations

from typing import Any

from emulators.model.scenario import Scenario
from emulators.model.units import format_bytes, format_rate, format_time
from emulators.registry import DEVICE_KINDS

MAX_EVENT_LINES = 20  # QP events in the summary; results.json keeps them all


def summary(results: dict[str, Any]) -> str:
    run = results["run"]
    lines = [
        f"scenario {results['scenario']['name']} (seed {results['scenario']['seed']}): "
        f"{format_time(results['virtual_end_ps'])} virtual in {run['wall_seconds']:.2f} s wall, "
        f"{results['events']} events, {run['windows']} windows, partition {run['partition']} "
        f"({len(run['hosts'])} hosts, {run['backend']})",
    ]
    raw = {n: f for n, f in results["flows"].items() if f.get("transport") != "rdma"}
    rdma = {n: f for n, f in results["flows"].items() if f.get("transport") == "rdma"}
    lines.extend(_raw_flow_lines(raw))
    lines.extend(_rdma_flow_lines(rdma))
    lines.extend(_job_lines(results))
    lines.extend(_kind_lines(results["devices"]))
    for path in results.get("wan", {}).get("capacity_map", []):
        lines.append(f"  WAN path {path['a']} - {path['z']} ({path['path']}): {format_rate(path['capacity_bps'])}, "
                     f"{format_time(path['latency_ps'])} one way")
    events = results.get("qp_events", [])
    for event in events[:MAX_EVENT_LINES]:
        lines.append(f"  {format_time(event['at_ps'])}: {event['kind']} of {event['flow']} at {event['device']} "
                     f"({event['reason']})")
    if len(events) > MAX_EVENT_LINES:
        lines.append(f"  ... and {len(events) - MAX_EVENT_LINES} more QP events (results.json qp_events)")
    return "\n".join(printable(line) for line in lines)


def printable(text: str) -> str:
    """``text`` with every control or other unprintable character escaped (``\\x1b``, ``\\n``): a name
    taken from a scenario or from results can neither forge a line nor drive the terminal."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _share(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.1f} %"


def _job_lines(results: dict[str, Any]) -> list[str]:
    job = results.get("job")
    if not job:
        return []
    parallel = " x ".join(f"{dim.upper()} {n}" for dim, n in job["parallel"].items() if n > 1) or "1 GPU"
    done = len(job["iterations"])
    lines = [f"  job {job['model']} on {job['gpus']} GPUs ({parallel}): {job['status']}, {done} iterations done "
             f"of {job['iterations_planned']} planned"]
    if not done:
        lines.append(f"    no iteration completed in {format_time(results['virtual_end_ps'])} of virtual time, so no "
                     "iteration time, throughput or efficiency (null in results.json); lengthen the scenario's "
                     "duration or shrink the job")
        lines.extend(_interruption_lines(job))
        return lines
    test = job.get("collective_test")
    if test:
        lines.append(f"    {test['op']} of {format_bytes(test['bytes'])}: {format_time(job['iteration_time_ps'])} "
                     f"(median), algorithm bandwidth {format_rate(test['algbw_bps'])}, bus bandwidth "
                     f"{format_rate(test['busbw_bps'])}")
        return lines
    lines.extend(_impact_lines(job))
    estimate = job.get("estimate", {})
    lines.append(f"    iteration {format_time(job['iteration_time_ps'])} (median; estimate "
                 f"{format_time(estimate.get('iteration_time_ps', 0))}), {job['tokens_per_gpu_per_s']:.0f} tokens "
                 f"per GPU per s ({_share(job['pool_efficiency'])} of the GPUs' peak x MFU), communication "
                 f"{_share(job['communication_share'])} of the time, exposed "
                 f"{format_time(job['exposed_communication_ps'] or 0)} per iteration")
    if "equivalent_compute" in job:
        lines.append(f"    equivalent compute {job['equivalent_compute']:.3f} (baseline iteration "
                     f"{format_time(job['baseline']['iteration_time_ps'])})")
    if "subpools" in job:
        kinds = "; ".join(f"{kind['gpus']} GPUs of {', '.join(kind['servers'])} ({kind['gpu']}, "
                          f"{kind['peak_tflops']:g} TFLOP/s, MFU {kind['mfu']:g}): {kind['tokens_per_s']:,.0f} "
                          f"tokens/s as a pool of {job['subpools']['gpus']}" for kind in job["subpools"]["kinds"])
        lines.append(f"    pool efficiency {100 * job['pool_efficiency_measured']:.1f} % of the measured sub-pool "
                     f"bound ({job['subpools']['bound_tokens_per_s']:,.0f} tokens/s: {kinds})")
    times = ", ".join(f"{it['iteration']}{'' if not it['attempt'] else '/' + str(it['attempt'])}: "
                      f"{format_time(it['time_ps'])}"
                      + (f" ({it['equivalent_compute']:.3f})" if it.get("equivalent_compute") is not None else "")
                      for it in job["iterations"])
    if times:
        lines.append(f"    iterations: {times}")
    volumes = [
        f"{dim.upper()} " + " + ".join(f"{format_bytes(n)} {cls.replace('_', '-')}" for cls, n in by.items() if n)
        for dim, by in job["bytes_per_iteration"].items() if any(by.values())
    ]
    if volumes:
        lines.append(f"    bytes sent in iteration {job['timeline']['iteration']}: {'; '.join(volumes)}")
    return lines + _interruption_lines(job)


def _interruption_lines(job: dict[str, Any]) -> list[str]:
    lines = []
    for stop in job["interruptions"]:
        resumed = (f"resumed {format_time(stop['resumed_ps'])} from iteration {stop['restart_iteration']}, "
                   f"{format_time(stop['lost_ps'])} lost") if stop["resumed_ps"] is not None else "job stopped"
        lines.append(f"    interrupted {format_time(stop['at_ps'])} at {stop['device']}: {stop['cause']}; {resumed}")
    return lines


def _impact_lines(job: dict[str, Any]) -> list[str]:
    """The headline of a run with faults: its worst iteration and why, then what each fault did."""
    faults = job.get("faults") or []
    worst = job.get("worst_iteration")
    if not worst or (not faults and not worst["causes"]):
        return []
    compute = (f", equivalent compute {worst['equivalent_compute']:.3f}"
               if worst.get("equivalent_compute") is not None else "")
    why = "; ".join(worst["causes"]) or "no fault, timeout or error in it"
    against = (f"{_signed_time(worst['cost_ps'])} against the {job['reference']} "
               f"({format_time(job['reference_iteration_ps'])})" if worst["cost_ps"] is not None
               else "no undisturbed iteration to compare with (give --baseline)")
    lines = [f"    worst iteration {worst['iteration']}{'' if not worst['attempt'] else '/' + str(worst['attempt'])}: "
             f"{format_time(worst['time_ps'])}, {against}{compute}: {why}"]
    for fault in faults:
        where = (f"in iteration {fault['iteration']}" + ("" if not fault["attempt"] else f"/{fault['attempt']}")
                 if fault["iteration"] is not None else fault["when"])
        head = f"    fault {fault['index']} at {format_time(fault['at_ps'])} ({'; '.join(fault['changes'])}), {where}: "
        if not fault["applied"]:
            lines.append(head + "never applied (after the run's end)")
        elif not fault["hit_traffic"]:
            lines.append(head + "hit no traffic")
        else:
            traffic = fault["traffic"]
            lines.append(head + f"{fault['frames_lost']:,} frames lost, {traffic['rx_corrupt_packets']:,} packets "
                         f"corrupted, {format_bytes(traffic['tx_bytes'])} carried while in force; "
                         f"{fault['qp_timeouts']} QP timeouts, {fault['qp_errors']} QP errors, "
                         f"{fault['interruptions']} interruptions; cost {_signed_time(fault['cost_ps'])}"
                         + (f" (its iteration's, shared with fault {', '.join(map(str, fault['shared_with']))})"
                            if fault["shared_with"] else ""))
    return lines


def _signed_time(ps: int | None) -> str:
    if ps is None:
        return "unknown (no undisturbed iteration; give --baseline)"
    return ("+" if ps >= 0 else "-") + format_time(abs(ps))


def _raw_flow_lines(flows: dict[str, Any]) -> list[str]:
    if not flows:
        return []
    lines = [f"  {'flow':<16} {'path':<26} {'latency min/p50/p99':<34} {'throughput':>12} {'loss':>10}"]
    for name, f in flows.items():
        lat = f.get("latency_ps", {})
        if lat.get("count"):
            latency = f"{format_time(lat['min'])} / {format_time(lat['p50'])} / {format_time(lat['p99'])}"
        else:
            latency = "no frames arrived"
        loss = f"{f['loss_ratio']:.2e}" if "loss_ratio" in f else "n/a"
        lines.append(f"  {name:<16} {f['src'] + ' -> ' + f['dst']:<26} {latency:<34} "
                     f"{format_rate(f.get('throughput_bps', 0)):>12} {loss:>10}")
        lines.append(f"  {'':<16} sent {format_bytes(f.get('tx_bytes', 0))}, received "
                     f"{format_bytes(f.get('rx_good_bytes', 0))} intact, {f.get('corrupt_packets', 0)} "
                     f"corrupted packets, {f.get('tx_drop_frames', 0)} frames dropped, "
                     f"{f.get('out_of_order', 0)} out of order")
    return lines


def _rdma_flow_lines(flows: dict[str, Any]) -> list[str]:
    if not flows:
        return []
    lines = [f"  {'rdma flow':<16} {'path':<26} {'state':<9} {'delivered':>10} {'completion':>12} "
             f"{'goodput':>12} {'resent':>10} {'NAKs':>6} {'timeouts':>8} {'CNPs':>6}"]
    for name, f in flows.items():
        done = format_time(f["fct_ps"]) if f["state"] == "complete" else "-"
        lines.append(
            f"  {name:<16} {f['src'] + ' -> ' + f['dst']:<26} {f['state']:<9} "
            f"{format_bytes(f['rx_payload_bytes']):>10} {done:>12} {format_rate(f['goodput_bps']):>12} "
            f"{format_bytes(f['retx_bytes']):>10} {f['naks_received']:>6} {f['timeouts']:>8} {f['cnps_received']:>6}")
    return lines


def _kind_lines(devices: dict[str, Any]) -> list[str]:
    """What each device kind adds (``DeviceKind.summary_lines``): rank by rank, every device's own
    lines in results order, then each kind's totals over its devices."""
    declared = [(kind.name, kind.summary_lines) for kind in DEVICE_KINDS.values() if kind.summary_lines is not None]
    lines: list[str] = []
    for rank in sorted({hook.rank for _, hook in declared}):
        for name, device in devices.items():
            kind = DEVICE_KINDS.get(device["kind"])
            hook = kind.summary_lines if kind is not None else None
            if hook is not None and hook.rank == rank and hook.device is not None:
                lines += hook.device(name, device)
        for kind_name, hook in declared:
            if hook.rank == rank and hook.total is not None:
                lines += hook.total([device for device in devices.values() if device["kind"] == kind_name])
    return lines


def estimate_summary(scenario: Scenario, result: dict[str, Any]) -> str:
    plan = scenario.job
    assert plan is not None
    info, par = plan.info, plan.parallel
    micro = sorted(set(info["micro_batches_per_replica"]))
    per_replica = "/".join(map(str, micro))
    dims = {"tp": "TP", "pp": "PP", "dp": "DP", "ep": "EP"}
    lines = [
        f"estimate of scenario {scenario.name}: {plan.model}, TP {par['tp']} x PP {par['pp']} x DP {par['dp']} "
        f"(EP {par['ep']}) on {result['gpus']} GPUs, {info['global_batch']} sequences of {info['sequence']} tokens "
        f"per iteration, {per_replica} micro-batches of {info['micro_batch']} per replica",
        f"  iteration {format_time(result['iteration_time_ps'])}: compute {format_time(result['compute_ps'])}, "
        f"pipeline bubble {format_time(result['bubble_ps'])}, DP after the pipeline "
        f"{format_time(result['dp_tail_ps'])}, exposed all-gather {format_time(result['exposed_all_gather_ps'])}",
        f"  {result['tokens_per_gpu_per_s']:.0f} tokens per GPU per second, effective MFU "
        f"{100 * result['mfu_effective']:.1f} %",
        "  communication per iteration (busiest rank, hidden or not): "
        + ", ".join(f"{dims[dim]} {format_time(ps)}" for dim, ps in result["comm_ps"].items()),
    ]
    for index, stage in enumerate(result["stages"]):
        lines.append(
            f"  stage {index}: {stage['layers']} layer{'' if stage['layers'] == 1 else 's'}; per micro-batch "
            f"forward {format_time(stage['forward_ps'])}, "
            f"backward {format_time(stage['backward_ps'])}, TP all-reduce {format_time(stage['tp_ps'])}, "
            f"EP all-to-all {format_time(stage['ep_ps'])}, sends {format_time(stage['send_forward_ps'])} forward / "
            f"{format_time(stage['send_backward_ps'])} back; DP {format_time(stage['dp_ps'])}")
    for pair, bps in result["site_capacity_bps"].items():
        lines.append(f"  site capacity {pair.replace('->', ' -> ')}: {format_rate(bps)}")
    if result["checkpoint_ps_per_iteration"]:
        lines.append(f"  checkpoint saves: {format_time(result['checkpoint_ps_per_iteration'])} per iteration "
                     "(not included above)")
    lines.append("  assumptions:")
    lines.extend(f"    - {text}" for text in result["assumptions"])
    return "\n".join(printable(line) for line in lines)
