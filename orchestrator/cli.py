"""``testbed``: run, validate or estimate a scenario, and report on a run."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from orchestrator.job_results import equivalent_compute
from orchestrator.partition import PARTITIONS, PartitionError
from orchestrator.run import BACKENDS, RunFailed, run_scenario, write_results
from orchestrator.scenario.loader import ScenarioError, load_scenario
from orchestrator.scenario.model import Scenario
from orchestrator.scenario.units import format_bytes, format_rate, format_time
from orchestrator.workload.estimate import estimate
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
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar of virtual time (it is shown only when stderr is a terminal)")
    run.add_argument("--baseline", type=Path, default=None, metavar="BASELINE",
                     help="a baseline scenario (.yaml, run here first) or its results (results.json or its "
                          "directory): adds equivalent compute = its iteration time / this run's")
    validate = sub.add_parser("validate", help="check a scenario file and exit")
    validate.add_argument("scenario", type=Path)
    estimate = sub.add_parser("estimate", help="print the closed-form estimate of a scenario's training job")
    estimate.add_argument("scenario", type=Path)
    estimate.add_argument("--json", action="store_true", help="print the estimate as JSON")
    report = sub.add_parser("report", help="write RUN_DIR/report.html and CSV time series from RUN_DIR/results.json")
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a directory `testbed run --out` wrote")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.command == "report":
        return report_run(args.run_dir)
    try:
        scenario = load_scenario(args.scenario, seed=getattr(args, "seed", None))
    except ScenarioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "validate":
        print(f"{args.scenario}: ok ({len(scenario.devices)} devices, {len(scenario.links)} links, "
              f"{len(scenario.flows)} flows, {len(scenario.faults)} faults)")
        return 0
    if args.command == "estimate":
        return print_estimate(scenario, args.json)
    show_progress = not args.no_progress and sys.stderr.isatty()
    try:
        baseline = None if args.baseline is None else read_baseline(args, show_progress)
        with progress_bar(scenario.duration_ps, show_progress) as progress:
            results = run_scenario(scenario, args.partition, args.backend, args.out, args.window_timeout, progress)
    except BaselineError as e:
        print(f"error: --baseline {e}", file=sys.stderr)
        return 2
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
    if baseline is not None:
        try:
            equivalent_compute(results, baseline, str(args.baseline))
        except ValueError as e:  # this run finished no iteration to compare
            print(f"error: --baseline {e}", file=sys.stderr)
            print(f"results: {args.out / 'results.json'}", file=sys.stderr)
            return 2
    print(summary(results))
    print(f"results: {write_results(results, args.out)}")
    return 0


class BaselineError(Exception):
    """The baseline could not be read or run."""


def read_baseline(args: argparse.Namespace, show_progress: bool) -> dict[str, Any]:
    """The baseline's results: read from a results.json (or the directory holding one), or from
    running a scenario file in the same partition and backend as the run it is compared with."""
    path: Path = args.baseline
    if path.is_dir():
        path = path / "results.json"
    if path.suffix == ".json":
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise BaselineError(f"{path}: cannot be read as results ({e})") from None
    else:
        try:
            scenario = load_scenario(path)
        except ScenarioError as e:
            raise BaselineError(str(e)) from None
        if scenario.job is None:
            raise BaselineError(f"{path}: the scenario has no job: block, so no iteration time to compare with")
        try:
            with progress_bar(scenario.duration_ps, show_progress) as progress:
                results = run_scenario(scenario, args.partition, args.backend, args.out / "baseline",
                                       args.window_timeout, progress)
        except (PartitionError, RunFailed) as e:
            raise BaselineError(f"{path}: {e}") from None
    job = results.get("job") if isinstance(results, dict) else None
    if not isinstance(job, dict) or not job.get("iteration_time_ps"):
        raise BaselineError(f"{path}: no completed iteration of a training job to compare with")
    baseline: dict[str, Any] = results
    return baseline


@contextlib.contextmanager
def progress_bar(duration_ps: int, show: bool) -> Iterator[Callable[[int], None] | None]:
    """A bar of virtual time on stderr while a run goes (None when not ``show``): it is gone, however
    the run ends, before the summary or the error is printed."""
    if not show:
        yield None
        return
    total = format_time(duration_ps)
    bar = tqdm(total=duration_ps, file=sys.stderr, leave=False, dynamic_ncols=True,
               desc=f"virtual {format_time(0)} / {total}", bar_format="{desc} |{bar}| {percentage:3.0f}% [{elapsed}]")

    def reached(end_ps: int) -> None:
        bar.set_description_str(f"virtual {format_time(end_ps)} / {total}", refresh=False)
        bar.update(end_ps - bar.n)

    try:
        yield reached
    finally:
        bar.close()


def report_run(run_dir: Path) -> int:
    """``testbed report``: 2 with one line on stderr when RUN_DIR holds no readable results."""
    from orchestrator.report import ReportError, write_report  # matplotlib loads only for reports

    try:
        written = write_report(run_dir)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
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
    lines.extend(_job_lines(results.get("job")))
    lines.extend(_switch_lines(results["devices"]))
    for path in results.get("wan", {}).get("capacity_map", []):
        lines.append(f"  WAN path {path['a']} - {path['z']} ({path['path']}): {format_rate(path['capacity_bps'])}, "
                     f"{format_time(path['latency_ps'])} one way")
    for event in results.get("qp_events", []):
        lines.append(f"  {format_time(event['at_ps'])}: {event['kind']} of {event['flow']} at {event['device']} "
                     f"({event['reason']})")
    return "\n".join(lines)


def _job_lines(job: dict[str, Any] | None) -> list[str]:
    if not job:
        return []
    parallel = " x ".join(f"{dim.upper()} {n}" for dim, n in job["parallel"].items() if n > 1) or "1 GPU"
    done = len(job["iterations"])
    lines = [f"  job {job['model']} on {job['gpus']} GPUs ({parallel}): {job['status']}, {done} iterations done "
             f"of {job['iterations_planned']} planned"]
    estimate = job.get("estimate", {})
    lines.append(f"    iteration {format_time(job['iteration_time_ps'])} (median; estimate "
                 f"{format_time(estimate.get('iteration_time_ps', 0))}), {job['tokens_per_gpu_per_s']:.0f} tokens "
                 f"per GPU per s ({100 * job['pool_efficiency']:.1f} % of the GPUs' peak x MFU), communication "
                 f"{100 * job['communication_share']:.1f} % of the time, exposed "
                 f"{format_time(job['exposed_communication_ps'])} per iteration")
    if "equivalent_compute" in job:
        lines.append(f"    equivalent compute {job['equivalent_compute']:.3f} (baseline iteration "
                     f"{format_time(job['baseline']['iteration_time_ps'])})")
    times = ", ".join(f"{it['iteration']}{'' if not it['attempt'] else '/' + str(it['attempt'])}: "
                      f"{format_time(it['time_ps'])}" for it in job["iterations"])
    if times:
        lines.append(f"    iterations: {times}")
    volumes = [
        f"{dim.upper()} " + " + ".join(f"{format_bytes(n)} {cls.replace('_', '-')}" for cls, n in by.items() if n)
        for dim, by in job["bytes_per_iteration"].items() if any(by.values())
    ]
    if volumes:
        lines.append(f"    bytes sent in iteration {job['timeline']['iteration']}: {'; '.join(volumes)}")
    for stop in job["interruptions"]:
        resumed = (f"resumed {format_time(stop['resumed_ps'])} from iteration {stop['restart_iteration']}, "
                   f"{format_time(stop['lost_ps'])} lost") if stop["resumed_ps"] is not None else "job stopped"
        lines.append(f"    interrupted {format_time(stop['at_ps'])} at {stop['device']}: {stop['cause']}; {resumed}")
    return lines


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


def print_estimate(scenario: Scenario, as_json: bool) -> int:
    """``testbed estimate``: the job's closed-form iteration time, readable or as JSON."""
    if scenario.job is None:
        print(f"error: {scenario.source}: the scenario has no job: block; add one to estimate it", file=sys.stderr)
        return 2
    try:
        result = estimate(scenario)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if as_json else estimate_summary(scenario, result))
    return 0


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
    return "\n".join(lines)


def entry() -> int:
    """Console-script entry: a reader that closes the pipe early (``| head``) is not an error."""
    try:
        return main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(entry())
