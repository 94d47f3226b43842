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

from orchestrator.deploy import DEFAULT_IMAGE, DOCKER_NETWORKS, K8S_NAMESPACE, DeployError, DeployOptions
from orchestrator.deploy.k8s_render import OVERLAYS
from orchestrator.job_results import equivalent_compute
from orchestrator.partition import PARTITIONS, PartitionError, plan_partition
from orchestrator.run import BACKENDS, DEPLOY_BACKENDS, ControlError, RunFailed, run_scenario, write_results
from orchestrator.scenario.loader import ScenarioError, load_scenario
from orchestrator.scenario.model import Scenario
from orchestrator.scenario.units import format_bytes, format_rate, format_time
from orchestrator.subpools import add_subpool_bound
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


def _pace(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (virtual seconds per wall second)") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"the pace must be a finite number > 0, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="testbed", description="AI computing network testbed")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario and write DIR/results.json")
    run.add_argument("scenario", type=Path)
    run.add_argument("--partition", choices=PARTITIONS, default="single",
                     help="single: one host; site: one per site (+ wan); device: one per device")
    run.add_argument("--backend", choices=BACKENDS + DEPLOY_BACKENDS, default="inproc",
                     help="inproc: hosts in this process; process: one OS process per host on loopback; "
                          "docker: one container per host; k8s: one pod per host (current kubectl context)")
    run.add_argument("--docker-network", choices=DOCKER_NETWORKS, default=None,
                     help="with --backend docker: bridge (default: a network per scenario, ports published on "
                          "127.0.0.1) or host (every host on its own loopback port)")
    _add_deploy_arguments(run, k8s_only=True)
    run.add_argument("--out", type=Path, default=Path("out"), help="results directory (default: out)")
    run.add_argument("--seed", type=_seed, default=None, help="override the scenario's seed")
    run.add_argument("--window-timeout", type=_seconds, default=60.0,
                     help="seconds a host may take to answer one window before the run fails (default 60)")
    run.add_argument("--pace", type=_pace, default=None, metavar="SPEED",
                     help="hold virtual time at wall time x SPEED (e.g. 1e-3: a virtual ms per wall second), so "
                          "people and controllers can watch and act on a live run")
    run.add_argument("--control", default=None, metavar="HOST:PORT",
                     help="serve the control service (testbed.control.v1: inject faults, read progress) there while "
                          "the run goes; injected faults are recorded in OUT/inputs.json for `testbed replay`")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar of virtual time (it is shown only when stderr is a terminal)")
    run.add_argument("--baseline", type=Path, default=None, metavar="BASELINE",
                     help="a baseline scenario (.yaml, run here first) or its results (results.json or its "
                          "directory): adds equivalent compute = its iteration time / this run's")
    run.add_argument("--no-subpools", action="store_true",
                     help="for a job on a mixed GPU pool, skip the runs of its homogeneous sub-pools (one per kind "
                          "of GPU, in this process) that measure the pool's upper bound")
    validate = sub.add_parser("validate", help="check a scenario file and exit")
    validate.add_argument("scenario", type=Path)
    estimate = sub.add_parser("estimate", help="print the closed-form estimate of a scenario's training job")
    estimate.add_argument("scenario", type=Path)
    estimate.add_argument("--json", action="store_true", help="print the estimate as JSON")
    replay = sub.add_parser("replay", help="run a recorded run again with the faults injected into it, and compare")
    replay.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="a directory `testbed run --control ... --out RUN_DIR` wrote (inputs.json, results.json)")
    replay.add_argument("--out", type=Path, default=None, help="where to write the replay (default RUN_DIR/replay)")
    report = sub.add_parser("report", help="write RUN_DIR/report.html and CSV time series from RUN_DIR/results.json")
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a directory `testbed run --out` wrote")
    render = sub.add_parser("render", help="write deployment manifests for a scenario's hosts")
    render.add_argument("target", choices=["k8s"], help="k8s: a kustomization over k8s/ (kubectl apply -k DIR)")
    render.add_argument("scenario", type=Path)
    render.add_argument("--partition", choices=PARTITIONS, default="single",
                        help="which devices share a host, as for `run` (default single)")
    render.add_argument("--out", type=Path, default=None,
                        help="directory to write (default: out/k8s/SCENARIO-PARTITION)")
    _add_deploy_arguments(render, k8s_only=False)
    sub.add_parser("status", help="list the testbed's containers with their state and health")
    logs = sub.add_parser("logs", help="print the log of the container that hosts DEVICE")
    logs.add_argument("device", metavar="DEVICE", help="a device (or host) name, as `testbed status` lists them")
    logs.add_argument("--scenario", default=None, help="the scenario's name, when several have DEVICE")
    logs.add_argument("--tail", type=_count, default=None, metavar="N", help="only the last N lines")
    down = sub.add_parser("down", help="remove the testbed's containers and networks (safe to run twice)")
    down.add_argument("--scenario", default=None, help="only this scenario's (by name)")
    return parser


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of lines") from None
    if value < 1:
        raise argparse.ArgumentTypeError("the number of lines must be >= 1")
    return value


def _add_deploy_arguments(parser: argparse.ArgumentParser, k8s_only: bool) -> None:
    """--image, --namespace and --overlay: for `run` (the latter two with --backend k8s) and `render`."""
    with_k8s = "with --backend k8s: " if k8s_only else ""
    parser.add_argument("--image", default=None,
                        help=f"the device host image (default {DEFAULT_IMAGE}; `make image` builds it)")
    parser.add_argument("--namespace", default=None, help=f"{with_k8s}the namespace (default {K8S_NAMESPACE})")
    parser.add_argument("--overlay", choices=list(OVERLAYS), default=None,
                        help=f"{with_k8s}the k8s/ kustomization to build on (default kind)")


def replay_run(run_dir: Path, out: Path | None) -> int:
    """``testbed replay``: the recorded scenario with its injected faults in the timeline, run again;
    0 when its results equal the recorded ones (everything outside ``run``), 1 when they differ."""
    from orchestrator.control import replay_scenario, schedule_sets
    from orchestrator.results import deterministic_view
    from orchestrator.run import INPUTS_FILE

    try:
        inputs = json.loads((run_dir / INPUTS_FILE).read_text())
        recorded = json.loads((run_dir / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: {run_dir} is not a recorded run (`testbed run --control ... --out {run_dir}`): {e}",
              file=sys.stderr)
        return 2
    try:
        scenario = replay_scenario(inputs)
    except (OSError, ScenarioError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run = recorded.get("run", {})
    out = out or run_dir / "replay"
    try:
        results = run_scenario(scenario, run.get("partition", "single"), "inproc", out,
                               prepare=schedule_sets(inputs.get("gnmi_sets", [])))
    except (PartitionError, RunFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(results))
    differing = sorted(k for k in set(deterministic_view(results)) | set(deterministic_view(recorded))
                       if results.get(k) != recorded.get(k))
    if differing:
        print(f"replay differs from {run_dir}/results.json in: {', '.join(differing)}")
        return 1
    print(f"replay identical to {run_dir}/results.json ({len(inputs.get('faults', []))} injected faults, "
          f"{len(inputs.get('gnmi_sets', []))} gNMI Sets); results: {out}")
    return 0


def deploy_options(args: argparse.Namespace, backend: str) -> DeployOptions:
    """The deployment flags as options; ValueError naming a flag that does not apply to ``backend``."""
    if getattr(args, "docker_network", None) is not None and backend != "docker":
        raise ValueError("--docker-network applies to --backend docker only")
    if backend not in DEPLOY_BACKENDS and args.image is not None:
        raise ValueError("--image applies to --backend docker or k8s only")
    if backend != "k8s" and (args.namespace is not None or args.overlay is not None):
        raise ValueError("--namespace and --overlay apply to --backend k8s only")
    defaults = DeployOptions()
    return DeployOptions(image=args.image or defaults.image,
                         docker_network=getattr(args, "docker_network", None) or defaults.docker_network,
                         namespace=args.namespace or defaults.namespace, overlay=args.overlay or defaults.overlay)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.command == "report":
        return report_run(args.run_dir)
    if args.command == "replay":
        return replay_run(args.run_dir, args.out)
    if args.command in ("status", "logs", "down"):
        from orchestrator.deploy.containers import manage_containers  # the Docker SDK loads only for these

        return manage_containers(args)
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
    if args.command == "render":
        return render_k8s(scenario, args)
    try:
        deploy = deploy_options(args, args.backend)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    show_progress = not args.no_progress and sys.stderr.isatty()
    try:
        baseline = None if args.baseline is None else read_baseline(args, show_progress, deploy)
        with progress_bar(scenario.duration_ps, show_progress) as progress:
            results = run_scenario(scenario, args.partition, args.backend, args.out, args.window_timeout, progress,
                                   deploy, pace=args.pace, control=args.control)
    except BaselineError as e:
        print(f"error: --baseline {e}", file=sys.stderr)
        return 2
    except PartitionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ControlError as e:
        print(f"error: --control {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        print(f"partial results: {args.out / 'results.json'}", file=sys.stderr)
        return 1
    except DeployError as e:
        print(f"error: {e}", file=sys.stderr)
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
    if not args.no_subpools:
        try:
            add_subpool_bound(results, scenario, run_scenario)
        except ValueError as e:  # a sub-pool completed no iteration
            print(f"warning: no measured pool bound: {e}", file=sys.stderr)
    print(summary(results))
    print(f"results: {write_results(results, args.out)}")
    return 0


class BaselineError(Exception):
    """The baseline could not be read or run."""


def read_baseline(args: argparse.Namespace, show_progress: bool, deploy: DeployOptions) -> dict[str, Any]:
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
                                       args.window_timeout, progress, deploy)
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


def render_k8s(scenario: Scenario, args: argparse.Namespace) -> int:
    """``testbed render k8s``: the scenario's hosts as a kustomization; 2 for an impossible partition."""
    from orchestrator.deploy.k8s_render import render  # PyYAML is loaded anyway; kept beside its command

    try:
        options = deploy_options(args, "k8s")
        plan = plan_partition(scenario, args.partition)
        out = args.out or Path("out") / "k8s" / f"{scenario.name}-{args.partition}"
        written = render(scenario.name, plan, out, options, str(args.scenario))
    except (ValueError, DeployError) as e:  # PartitionError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    hosts = f"{len(plan.hosts)} device host{'' if len(plan.hosts) == 1 else 's'}"
    print(f"{written[0].parent}: {hosts} of scenario {scenario.name}, partition {args.partition}; "
          f"deploy with `kubectl apply -k {written[0].parent}`")
    return 0


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
    lines.extend(_job_lines(results.get("job")))
    lines.extend(_switch_lines(results["devices"]))
    lines.extend(_olink_lines(results["devices"]))
    for path in results.get("wan", {}).get("capacity_map", []):
        lines.append(f"  WAN path {path['a']} - {path['z']} ({path['path']}): {format_rate(path['capacity_bps'])}, "
                     f"{format_time(path['latency_ps'])} one way")
    events = results.get("qp_events", [])
    for event in events[:MAX_EVENT_LINES]:
        lines.append(f"  {format_time(event['at_ps'])}: {event['kind']} of {event['flow']} at {event['device']} "
                     f"({event['reason']})")
    if len(events) > MAX_EVENT_LINES:
        lines.append(f"  ... and {len(events) - MAX_EVENT_LINES} more QP events (results.json qp_events)")
    return "\n".join(lines)


def _job_lines(job: dict[str, Any] | None) -> list[str]:
    if not job:
        return []
    parallel = " x ".join(f"{dim.upper()} {n}" for dim, n in job["parallel"].items() if n > 1) or "1 GPU"
    done = len(job["iterations"])
    lines = [f"  job {job['model']} on {job['gpus']} GPUs ({parallel}): {job['status']}, {done} iterations done "
             f"of {job['iterations_planned']} planned"]
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
                 f"per GPU per s ({100 * job['pool_efficiency']:.1f} % of the GPUs' peak x MFU), communication "
                 f"{100 * job['communication_share']:.1f} % of the time, exposed "
                 f"{format_time(job['exposed_communication_ps'])} per iteration")
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
                      + (f" ({it['equivalent_compute']:.3f})" if "equivalent_compute" in it else "")
                      for it in job["iterations"])
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


def _impact_lines(job: dict[str, Any]) -> list[str]:
    """The headline of a run with faults: its worst iteration and why, then what each fault did."""
    faults = job.get("faults") or []
    worst = job.get("worst_iteration")
    if not worst or (not faults and not worst["causes"]):
        return []
    compute = f", equivalent compute {worst['equivalent_compute']:.3f}" if "equivalent_compute" in worst else ""
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


OLINK_FIGURES = (("forwarded_frames", "frames forwarded"), ("reduced_chunks", "chunks reduced in the network"),
                 ("replicated_frames", "frames replicated"), ("unroutable_frames", "unroutable"))
OLINK_PORT_FIGURES = (("crc_errors", "CRC errors"), ("replayed_frames", "frames replayed"),
                      ("replay_timeouts", "replay timeouts"), ("credit_stalls", "credit stalls"))


def _olink_lines(devices: dict[str, Any]) -> list[str]:
    """Per OLink switch: what it forwarded and reduced, and its ports' link-level figures; the GPUs'
    scale-up ports summed into one line."""
    lines = []
    gpu_ports: dict[str, int] = {}
    for name, device in devices.items():
        ports = device.get("olink", {})
        totals = {key: sum(port[key] for port in ports.values()) for key, _ in OLINK_PORT_FIGURES}
        if device["kind"] == "olink":
            counters = device["counters"]
            figures = [f"{counters[key]} {label}" for key, label in OLINK_FIGURES if counters.get(key)]
            figures += [f"{totals[key]} {label}" for key, label in OLINK_PORT_FIGURES if totals[key]]
            peak = format_bytes(max((port["replay_buffer_peak_bytes"] for port in ports.values()), default=0))
            lines.append(f"  olink {name}: replay buffer peak {peak}" + (f", {', '.join(figures)}" if figures else ""))
        elif ports:
            for key, n in totals.items():
                gpu_ports[key] = gpu_ports.get(key, 0) + n
    if gpu_ports:
        summed = ", ".join(f"{gpu_ports[key]} {label}" for key, label in OLINK_PORT_FIGURES)
        lines.append(f"  GPU scale-up ports: {summed}")
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
