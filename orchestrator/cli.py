"""``testbed``: run or validate a scenario."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from orchestrator.partition import PARTITIONS, PartitionError
from orchestrator.run import BACKENDS, RunFailed, run_scenario, write_results
from orchestrator.scenario.loader import ScenarioError, load_scenario
from orchestrator.scenario.units import format_bytes, format_rate, format_time
from services.logs import configure_logging


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer seed") from None
    if value < 0:
        raise argparse.ArgumentTypeError("the seed must be >= 0")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the timeout must be > 0 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="testbed", description="AI computing network testbed")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario and write DIR/results.json")
    run.add_argument("scenario", type=Path)
    run.add_argument("--partition", choices=PARTITIONS, default="single",
                     help="single: one host; site: one per site (+ wan); device: one per device")
    run.add_argument("--backend", choices=BACKENDS, default="inproc",
                     help="inproc: hosts in this process; process: one OS process per host on loopback")
    run.add_argument("--out", type=Path, default=Path("out"), help="results directory (default: out)")
    run.add_argument("--seed", type=_seed, default=None, help="override the scenario's seed")
    run.add_argument("--window-timeout", type=_seconds, default=60.0,
                     help="seconds a host may take to answer one window before the run fails (default 60)")
    validate = sub.add_parser("validate", help="check a scenario file and exit")
    validate.add_argument("scenario", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        scenario = load_scenario(args.scenario, seed=getattr(args, "seed", None))
    except ScenarioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "validate":
        print(f"{args.scenario}: ok ({len(scenario.devices)} devices, {len(scenario.links)} links, "
              f"{len(scenario.flows)} flows, {len(scenario.faults)} faults)")
        return 0
    try:
        results = run_scenario(scenario, args.partition, args.backend, args.out, args.window_timeout)
    except PartitionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        print(f"partial results: {args.out / 'results.json'}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"error: {e}: generated gRPC stubs are missing; run `make install`", file=sys.stderr)
        return 1
    print(summary(results))
    print(f"results: {write_results(results, args.out)}")
    return 0


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
    lines.extend(_switch_lines(results["devices"]))
    for path in results.get("wan", {}).get("capacity_map", []):
        lines.append(f"  WAN path {path['a']} - {path['z']} ({path['path']}): {format_rate(path['capacity_bps'])}, "
                     f"{format_time(path['latency_ps'])} one way")
    for event in results.get("qp_events", []):
        lines.append(f"  {format_time(event['at_ps'])}: {event['kind']} of {event['flow']} at {event['device']} "
                     f"({event['reason']})")
    return "\n".join(lines)


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


SWITCH_FIGURES = (("drop_headroom_frames", "headroom drops"), ("drop_lossy_frames", "lossy drops"),
                  ("drop_buffer_frames", "buffer-full drops"), ("no_route_frames", "unroutable"),
                  ("pfc_xoff_sent", "XOFF sent"), ("ecn_marked_frames", "ECN marked"),
                  ("grants_sent", "grants"), ("reorder_peak_bytes", "reorder peak B"),
                  ("fast_cnps_sent", "fast CNPs"), ("protection_switches", "protection switches"),
                  ("protection_gap_frames", "frames lost in switch gaps"))


def _switch_lines(devices: dict[str, Any]) -> list[str]:
    lines = []
    for name, device in devices.items():
        if device["kind"] not in ("switch", "gateway", "otn"):
            continue
        counters = device["counters"]
        figures = ", ".join(f"{counters[key]} {label}" for key, label in SWITCH_FIGURES if counters.get(key))
        peak = format_bytes(counters.get("buffer_peak_bytes", 0))
        kind = device["kind"]
        what = f"switch {name} ({device['settings']['mode']})" if kind == "switch" else f"{kind} {name}"
        lines.append(f"  {what}: buffer peak {peak}" + (f", {figures}" if figures else ""))
        for event in device.get("protection_events", []):
            lines.append(f"  {format_time(event['at_ps'])}: {name} switched {event['from']} -> {event['to']} "
                         f"({event['reason']})")
    return lines


def entry() -> int:
    """Console-script entry: a reader that closes the pipe early (``| head``) is not an error."""
    try:
        return main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(entry())
