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

from emulators.model.scenario import Scenario
from emulators.model.units import format_time
from orchestrator.cli_args import (
    PACE_RANGE,
    WINDOW_TIMEOUT_RANGE,
    Parser,
    add_deploy_arguments,
    deploy_options,
    line_count,
    pace,
    seed,
    window_timeout,
)
from orchestrator.cli_replay import replay_run
from orchestrator.control_error import ControlError
from orchestrator.deploy import DOCKER_NETWORKS, DeployError, DeployOptions
from orchestrator.deploy.k8s_render import check_scenario_name
from orchestrator.job_results import baseline_iteration_ps, equivalent_compute
from orchestrator.partition import PARTITIONS, PartitionError, plan_partition
from orchestrator.results import read_json
from orchestrator.run import BACKENDS, DEPLOY_BACKENDS, RunFailed, RunInterrupted, run_scenario, write_results
from orchestrator.run_out import OutError, default_out, prepare_out
from orchestrator.scenario.loader import ScenarioError, load_scenario
from orchestrator.subpools import add_subpool_bound
from orchestrator.summary import estimate_summary, printable, summary
from orchestrator.workload.estimate import estimate
from services.logs import configure_logging

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand with its flags, and in ``func`` the function that carries it out."""
    parser = Parser(prog="testbed", description="AI computing network testbed")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario and write DIR/results.json")
    _add_run_arguments(run)
    run.set_defaults(func=with_scenario(run_command))
    validate = sub.add_parser("validate", help="check a scenario file and exit")
    validate.add_argument("scenario", type=Path)
    validate.set_defaults(func=with_scenario(validate_command))
    estimate = sub.add_parser("estimate", help="print the closed-form estimate of a scenario's training job")
    estimate.add_argument("scenario", type=Path)
    estimate.add_argument("--json", action="store_true", help="print the estimate as JSON")
    estimate.set_defaults(func=with_scenario(estimate_command))
    replay = sub.add_parser("replay", help="run a recorded run again with the faults injected into it, and compare")
    replay.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="a directory `testbed run --control ... --out RUN_DIR` wrote (inputs.json, results.json)")
    replay.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where to write the replay (default RUN_DIR/replay, replacing an earlier replay there)")
    replay.add_argument("--force", action="store_true", help="replace an earlier run's results in --out")
    replay.set_defaults(func=replay_command)
    report = sub.add_parser("report", help="write RUN_DIR/report.html and CSV time series from RUN_DIR/results.json")
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a directory `testbed run --out` wrote")
    report.set_defaults(func=report_command)
    render = sub.add_parser("render", help="write deployment manifests for a scenario's hosts")
    render.add_argument("target", choices=["k8s"], help="k8s: a kustomization over k8s/ (kubectl apply -k DIR)")
    render.add_argument("scenario", type=Path)
    render.add_argument("--partition", choices=PARTITIONS, default="single",
                        help="which devices share a host, as for `run` (default single)")
    render.add_argument("--out", type=Path, default=None,
                        help="directory to write (default: out/k8s/SCENARIO-PARTITION)")
    add_deploy_arguments(render, k8s_only=False)
    render.set_defaults(func=with_scenario(render_command))
    status = sub.add_parser("status", help="list the testbed's containers with their state and health")
    status.set_defaults(func=containers_command)
    logs = sub.add_parser("logs", help="print the log of the container that hosts DEVICE")
    logs.add_argument("device", metavar="DEVICE", help="a device (or host) name, as `testbed status` lists them")
    logs.add_argument("--scenario", default=None, help="the scenario's name, when several have DEVICE")
    logs.add_argument("--tail", type=line_count, default=None, metavar="N", help="only the last N lines")
    logs.set_defaults(func=containers_command)
    down = sub.add_parser("down", help="remove the containers and networks of the scenarios run from this "
                                       "checkout with --backend docker (safe to run twice)")
    which = down.add_mutually_exclusive_group()
    which.add_argument("--scenario", default=None, metavar="NAME",
                       help="remove this scenario's instead (`testbed status` lists them)")
    which.add_argument("--all", action="store_true",
                       help="remove every testbed container and network on the engine, other users' too")
    down.set_defaults(func=containers_command)
    return parser


def _add_run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("scenario", type=Path)
    run.add_argument("--partition", choices=PARTITIONS, default="single",
                     help="single: one host; site: one per site (+ wan); device: one per device")
    run.add_argument("--backend", choices=BACKENDS + DEPLOY_BACKENDS, default="inproc",
                     help="inproc: hosts in this process; process: one OS process per host on loopback; "
                          "docker: one container per host; k8s: one pod per host (current kubectl context)")
    run.add_argument("--docker-network", choices=DOCKER_NETWORKS, default=None,
                     help="with --backend docker: bridge (default: a network per scenario, ports published on "
                          "127.0.0.1) or host (every host on its own loopback port)")
    add_deploy_arguments(run, k8s_only=True)
    run.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="results directory (default: out/NAME, NAME the scenario's name); one that holds an "
                          "earlier run's results is refused unless --force")
    run.add_argument("--force", action="store_true", help="replace the earlier run's results in --out")
    run.add_argument("--seed", type=seed, default=None, help="override the scenario's seed (0 to 2**64 - 1)")
    run.add_argument("--window-timeout", type=window_timeout, default=60.0, metavar="SECONDS",
                     help="seconds a host may take to answer one window before the run fails (default 60; "
                          f"{WINDOW_TIMEOUT_RANGE[0]:g} to {WINDOW_TIMEOUT_RANGE[1]:g})")
    run.add_argument("--pace", type=pace, default=None, metavar="SPEED",
                     help="hold virtual time at wall time x SPEED (e.g. 1e-3: a virtual ms per wall second; "
                          f"{PACE_RANGE[0]:g} to {PACE_RANGE[1]:g}), so people and controllers can watch and act "
                          "on a live run")
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


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a bad flag (argparse said which, in one line)
        return int(e.code or 0)
    configure_logging(args.log_level)
    command: Command = args.func
    return command(args)


def with_scenario(command: Callable[[Scenario, argparse.Namespace], int]) -> Command:
    """``command`` on the scenario its arguments name (with their --seed, if any); 2 with one line on
    stderr when that is no valid scenario."""

    def on_scenario(args: argparse.Namespace) -> int:
        try:
            scenario = load_scenario(args.scenario, seed=getattr(args, "seed", None))
        except ScenarioError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return command(scenario, args)

    return on_scenario


def validate_command(scenario: Scenario, args: argparse.Namespace) -> int:
    print(f"{args.scenario}: ok ({len(scenario.devices)} devices, {len(scenario.links)} links, "
          f"{len(scenario.flows)} flows, {len(scenario.faults)} faults)")
    print_warnings(scenario)
    return 0


def replay_command(args: argparse.Namespace) -> int:
    return replay_run(args.run_dir, args.out, args.force)


def containers_command(args: argparse.Namespace) -> int:
    """``testbed status``, ``logs`` and ``down``."""
    from orchestrator.deploy.containers import manage_containers  # the Docker SDK loads only for these

    return manage_containers(args)


def run_command(scenario: Scenario, args: argparse.Namespace) -> int:
    """``testbed run``: 0 done, 1 the run failed, 2 refused; 128 + N stopped by signal N."""
    # everything that can be refused is, before anything is written or started
    try:
        deploy = deploy_options(args, args.backend)
        plan_partition(scenario, args.partition)
        baseline = None if args.baseline is None else read_baseline(args.baseline)
        out = prepare_out(args.out or default_out(scenario), args.force)
    except BaselineError as e:
        print(f"error: --baseline {e}", file=sys.stderr)
        return 2
    except (ValueError, OutError) as e:  # a flag for another backend, an impossible partition (PartitionError)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_warnings(scenario)
    if args.backend == "docker":
        record_docker_run(scenario, baseline)
    show_progress = not args.no_progress and sys.stderr.isatty()
    try:
        if isinstance(baseline, Scenario):
            baseline = run_baseline(baseline, args, out, show_progress, deploy)
        with progress_bar(scenario.duration_ps, show_progress) as progress:
            results = run_scenario(scenario, args.partition, args.backend, out, args.window_timeout, progress,
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
    except RunInterrupted as e:
        return interrupted(e, out / ("results.json" if baseline is None or isinstance(baseline, dict)
                                     else "baseline/results.json"))
    except RunFailed as e:
        print(f"error: {e}; partial results: {out / 'results.json'}", file=sys.stderr)
        return 1
    except DeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"error: {e}: generated gRPC stubs are missing; run `make install`", file=sys.stderr)
        return 1
    return finish_run(results, scenario, baseline, args, out)


def finish_run(results: dict[str, Any], scenario: Scenario, baseline: dict[str, Any] | None,
               args: argparse.Namespace, out: Path) -> int:
    """A run that ended: its equivalent compute and sub-pool bound added, its summary printed and its
    results.json written."""
    if baseline is not None:
        try:
            equivalent_compute(results, baseline, str(args.baseline))
        except ValueError as e:  # this run finished no iteration to compare
            print(f"error: --baseline {e}", file=sys.stderr)
            print(f"results: {out / 'results.json'}", file=sys.stderr)
            return 2
    if not args.no_subpools:
        try:
            add_subpool_bound(results, scenario, run_scenario)
        except ValueError as e:  # a sub-pool completed no iteration
            print(f"warning: no measured pool bound: {e}", file=sys.stderr)
        except RunInterrupted as e:  # the run itself is written; its sub-pools' bound is not measured
            return interrupted(e, out / "results.json", "while measuring the sub-pools' bound")
    print(summary(results))
    try:
        print(f"results: {write_results(results, out)}")
    except OSError as e:  # a full disk; the results the run wrote itself are still there
        print(f"error: cannot write {out / 'results.json'}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


def interrupted(e: RunInterrupted, results: Path, during: str = "") -> int:
    """One line for a run SIGINT or SIGTERM stopped; the shell's exit status for that signal."""
    print(f"error: {e}{' ' + during if during else ''}; partial results: {results}", file=sys.stderr)
    return 128 + e.signal_number


def print_warnings(scenario: Scenario) -> None:
    """What the loader accepted but doubts (a fault that changes no link, a flow after the end), on stderr."""
    for warning in getattr(scenario, "warnings", ()):
        print(f"warning: {printable(warning)}", file=sys.stderr)


def record_docker_run(scenario: Scenario, baseline: dict[str, Any] | Scenario | None) -> None:
    """Note the scenarios this checkout starts in containers, for a bare `testbed down`."""
    from orchestrator.deploy.containers import record_scenarios

    names = [scenario.name] + ([baseline.name] if isinstance(baseline, Scenario) else [])
    try:
        record_scenarios(names)
    except OSError as e:
        print(f"warning: cannot note the run for `testbed down` ({e.strerror or e}); remove its containers "
              f"with `testbed down --scenario {scenario.name}`", file=sys.stderr)


class BaselineError(Exception):
    """The baseline could not be read or run."""


def read_baseline(path: Path) -> dict[str, Any] | Scenario:
    """The baseline: another run's results (a results.json, or the directory holding one), checked to
    have an iteration time; or a scenario file with a training job, which the run runs first."""
    if path.is_dir():
        path = path / "results.json"
    elif not path.exists():
        raise BaselineError(f"{path}: no such file")
    if path.suffix == ".json":
        try:
            results = read_json(path)
            baseline_iteration_ps(results, str(path))
        except OSError as e:
            raise BaselineError(f"{path}: cannot be read ({e.strerror or e})") from None
        except ValueError as e:
            raise BaselineError(str(e)) from None
        baseline: dict[str, Any] = results
        return baseline
    try:
        scenario = load_scenario(path)
    except ScenarioError as e:
        raise BaselineError(str(e)) from None
    if scenario.job is None:
        raise BaselineError(f"{path}: the scenario has no job: block, so no iteration time to compare with")
    return scenario


def run_baseline(scenario: Scenario, args: argparse.Namespace, out: Path, show_progress: bool,
                 deploy: DeployOptions) -> dict[str, Any]:
    """The baseline scenario's results, run into OUT/baseline in the partition and backend of the run
    it is compared with."""
    try:
        with progress_bar(scenario.duration_ps, show_progress) as progress:
            results = run_scenario(scenario, args.partition, args.backend, out / "baseline", args.window_timeout,
                                   progress, deploy)
        baseline_iteration_ps(results, str(args.baseline))
    except RunInterrupted:
        raise
    except (PartitionError, RunFailed) as e:
        raise BaselineError(f"{args.baseline}: {e}") from None
    except ValueError as e:  # it completed no iteration
        raise BaselineError(str(e)) from None
    return results


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


def render_command(scenario: Scenario, args: argparse.Namespace) -> int:
    """``testbed render k8s``: the scenario's hosts as a kustomization; 2 for an impossible partition."""
    from orchestrator.deploy.k8s_render import render  # PyYAML is loaded anyway; kept beside its command

    try:
        options = deploy_options(args, "k8s")
        plan = plan_partition(scenario, args.partition)
        check_scenario_name(scenario.name)  # before it names a directory
        out = args.out or Path("out") / "k8s" / f"{scenario.name}-{args.partition}"
        written = render(scenario.name, plan, out, options, str(args.scenario))
    except (ValueError, DeployError) as e:  # PartitionError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: --out {out} cannot be written: {e.strerror or e}", file=sys.stderr)
        return 2
    hosts = f"{len(plan.hosts)} device host{'' if len(plan.hosts) == 1 else 's'}"
    print(f"{out}: {hosts} of scenario {scenario.name}, partition {args.partition}; deploy with "
          f"`kubectl apply -k {written[1].parent}` (once: the namespace and what every scenario shares) and "
          f"`kubectl apply -k {out}`; `kubectl delete -k {out}` removes this scenario's hosts only")
    return 0


def report_command(args: argparse.Namespace) -> int:
    """``testbed report``: 2 with one line on stderr when RUN_DIR holds no readable results."""
    from orchestrator.report import ReportError, write_report  # matplotlib loads only for reports

    try:
        written = write_report(args.run_dir)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def estimate_command(scenario: Scenario, args: argparse.Namespace) -> int:
    """``testbed estimate``: the job's closed-form iteration time, readable or as JSON."""
    if scenario.job is None:
        print(f"error: {scenario.source}: the scenario has no job: block; add one to estimate it", file=sys.stderr)
        return 2
    try:
        result = estimate(scenario)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else estimate_summary(scenario, result))
    return 0


def entry() -> int:
    """Console-script entry: a reader that closes the pipe early (``| head``) is not an error."""
    # gRPC's own notes (a GOAWAY from a host that stops) are not errors
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        return main()
    except KeyboardInterrupt:  # Ctrl-C outside a run (a run stops itself and says so)
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(entry())
