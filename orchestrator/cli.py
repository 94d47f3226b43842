"""``testbed``: run, validate or estimate a scenario, and report on a run."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import yaml
from tqdm import tqdm

from emulators.model.units import format_bytes, format_rate, format_time
from orchestrator.deploy import DEFAULT_IMAGE, DOCKER_NETWORKS, K8S_NAMESPACE, DeployError, DeployOptions
from orchestrator.deploy.k8s_render import OVERLAYS, check_scenario_name
from orchestrator.job_results import baseline_iteration_ps, equivalent_compute
from orchestrator.partition import PARTITIONS, PartitionError, plan_partition
from orchestrator.results import read_json
from orchestrator.run import (
    BACKENDS,
    DEPLOY_BACKENDS,
    INPUTS_FILE,
    ControlError,
    RunFailed,
    RunInterrupted,
    run_scenario,
    write_results,
)
from orchestrator.scenario.loader import ScenarioError, load_scenario
from orchestrator.scenario.model import Scenario
from orchestrator.subpools import add_subpool_bound
from orchestrator.workload.estimate import estimate
from services.logs import configure_logging

MAX_SEED = 2**64 - 1  # a seed is mixed as a 64-bit word (emulators.kernel.rng)
# virtual seconds per wall second: at the low end a paced window (PACE_TICK_S of wall time) is still
# 50 ps of virtual time, more than the 1 ps it must be; above the high end pacing holds nothing back
PACE_RANGE = (1e-9, 1e6)
WINDOW_TIMEOUT_RANGE = (0.1, 86_400.0)  # seconds: less is no time to answer; more is a day of a silent host
MAX_TAIL = 10**9  # lines: more than any container's log


class _Parser(argparse.ArgumentParser):
    """Bad flags get one ``error:`` line naming the flag, like every other bad input (argparse would
    add its usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message.removeprefix('argument ')} (see `{self.prog} --help`)\n")


def _shown(text: str) -> str:
    """A value from the command line, quoted as it is reported back: escaped, and cut if it is long."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not an integer seed") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"the seed must be >= 0 and <= 2**64 - 1, not {_shown(text)}")
    return value


def _in_range(text: str, low: float, high: float, what: str, unit: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a number ({unit})") from None
    if not low <= value <= high:  # nan and inf fail too
        raise argparse.ArgumentTypeError(f"{what} must be from {low:g} to {high:g} {unit}, not {_shown(text)}")
    return value


def _window_timeout(text: str) -> float:
    return _in_range(text, *WINDOW_TIMEOUT_RANGE, "the timeout", "seconds")


def _pace(text: str) -> float:
    return _in_range(text, *PACE_RANGE, "the pace", "virtual seconds per wall second")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a number of lines") from None
    if not 1 <= value <= MAX_TAIL:
        raise argparse.ArgumentTypeError(f"the number of lines must be from 1 to {MAX_TAIL}, not {_shown(text)}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="testbed", description="AI computing network testbed")
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
    run.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="results directory (default: out/NAME, NAME the scenario's name); one that holds an "
                          "earlier run's results is refused unless --force")
    run.add_argument("--force", action="store_true", help="replace the earlier run's results in --out")
    run.add_argument("--seed", type=_seed, default=None, help="override the scenario's seed (0 to 2**64 - 1)")
    run.add_argument("--window-timeout", type=_window_timeout, default=60.0, metavar="SECONDS",
                     help="seconds a host may take to answer one window before the run fails (default 60; "
                          f"{WINDOW_TIMEOUT_RANGE[0]:g} to {WINDOW_TIMEOUT_RANGE[1]:g})")
    run.add_argument("--pace", type=_pace, default=None, metavar="SPEED",
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
    validate = sub.add_parser("validate", help="check a scenario file and exit")
    validate.add_argument("scenario", type=Path)
    estimate = sub.add_parser("estimate", help="print the closed-form estimate of a scenario's training job")
    estimate.add_argument("scenario", type=Path)
    estimate.add_argument("--json", action="store_true", help="print the estimate as JSON")
    replay = sub.add_parser("replay", help="run a recorded run again with the faults injected into it, and compare")
    replay.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="a directory `testbed run --control ... --out RUN_DIR` wrote (inputs.json, results.json)")
    replay.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where to write the replay (default RUN_DIR/replay, replacing an earlier replay there)")
    replay.add_argument("--force", action="store_true", help="replace an earlier run's results in --out")
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
    down = sub.add_parser("down", help="remove the containers and networks of the scenarios run from this "
                                       "checkout with --backend docker (safe to run twice)")
    which = down.add_mutually_exclusive_group()
    which.add_argument("--scenario", default=None, metavar="NAME",
                       help="remove this scenario's instead (`testbed status` lists them)")
    which.add_argument("--all", action="store_true",
                       help="remove every testbed container and network on the engine, other users' too")
    return parser


def _add_deploy_arguments(parser: argparse.ArgumentParser, k8s_only: bool) -> None:
    """--image, --namespace and --overlay: for `run` (the latter two with --backend k8s) and `render`."""
    with_k8s = "with --backend k8s: " if k8s_only else ""
    parser.add_argument("--image", default=None,
                        help=f"the device host image (default {DEFAULT_IMAGE}; `make image` builds it)")
    parser.add_argument("--namespace", default=None, help=f"{with_k8s}the namespace (default {K8S_NAMESPACE})")
    parser.add_argument("--overlay", choices=list(OVERLAYS), default=None,
                        help=f"{with_k8s}the k8s/ kustomization to build on (default kind)")


def replay_run(run_dir: Path, out: Path | None, force: bool = False) -> int:
    """``testbed replay``: the recorded scenario with its injected faults in the timeline, run again;
    0 when its results equal the recorded ones (everything outside ``run``), 1 when they differ."""
    from orchestrator.control import replay_scenario, schedule_sets
    from orchestrator.results import deterministic_view

    try:
        if not run_dir.is_dir():
            raise ValueError(f"{run_dir} is not a directory" if run_dir.exists() else f"no such directory {run_dir}")
        inputs = read_json(run_dir / INPUTS_FILE)
        recorded = read_json(run_dir / "results.json")
        _check_recorded(inputs, recorded)
    except (OSError, ValueError) as e:
        print(f"error: {run_dir} is not a recorded run (`testbed run --control ... --out {run_dir}`): "
              f"{getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 2
    try:
        scenario = replay_scenario(inputs)
    except (OSError, ScenarioError, ValueError, yaml.YAMLError, LookupError, TypeError, AttributeError) as e:
        print(f"error: {run_dir / INPUTS_FILE}: its scenario cannot be replayed: {_one_line(e)}", file=sys.stderr)
        return 2
    try:
        out = prepare_out(out, force) if out is not None else prepare_out(run_dir / "replay", force=True)
    except OutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        results = run_scenario(scenario, recorded["run"].get("partition", "single"), "inproc", out,
                               prepare=schedule_sets(inputs.get("gnmi_sets", [])))
    except PartitionError as e:
        print(f"error: {run_dir / 'results.json'}: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (LookupError, TypeError, ValueError) as e:  # from putting the recorded gNMI Sets back
        print(f"error: {run_dir / INPUTS_FILE}: a recorded gNMI Set cannot be replayed: {_one_line(e)}",
              file=sys.stderr)
        return 2
    print(summary(results))
    differing = sorted(k for k in set(deterministic_view(results)) | set(deterministic_view(recorded))
                       if results.get(k) != recorded.get(k))
    if differing:
        print(f"replay differs from {run_dir}/results.json in: {', '.join(differing)}")
        return 1
    print(f"replay identical to {run_dir}/results.json ({len(inputs.get('faults', []))} injected faults, "
          f"{len(inputs.get('gnmi_sets', []))} gNMI Sets); results: {out}")
    return 0


def _check_recorded(inputs: Any, recorded: Any) -> None:
    """ValueError naming what a run directory's inputs.json or results.json lacks for a replay."""
    if not isinstance(inputs, dict) or not isinstance(inputs.get("scenario"), str):
        raise ValueError("inputs.json names no scenario file")
    if isinstance(inputs.get("seed"), bool) or not isinstance(inputs.get("seed"), int):
        raise ValueError("inputs.json has no integer seed")
    for key in ("faults", "gnmi_sets", "timeline"):
        entries = inputs.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise ValueError(f"inputs.json {key} is not a list of records")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("run"), dict):
        raise ValueError("results.json is not a run's results")


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return " ".join(str(error).split()) or type(error).__name__


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
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a bad flag (argparse said which, in one line)
        return int(e.code or 0)
    configure_logging(args.log_level)
    if args.command == "report":
        return report_run(args.run_dir)
    if args.command == "replay":
        return replay_run(args.run_dir, args.out, args.force)
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
        print_warnings(scenario)
        return 0
    if args.command == "estimate":
        return print_estimate(scenario, args.json)
    if args.command == "render":
        return render_k8s(scenario, args)
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


class OutError(Exception):
    """``--out`` cannot take the run's results; the message says why and what to pass instead."""


def default_out(scenario: Scenario) -> Path:
    """out/NAME: every scenario its own results directory."""
    try:
        check_scenario_name(scenario.name)
    except DeployError as e:
        raise OutError(f"{e}; give --out DIR") from None
    return Path("out") / scenario.name


def prepare_out(out: Path, force: bool) -> Path:
    """``out``, ready for a run's results before the run starts: a directory (created) this process can
    write in, holding no earlier run's results, unless ``force`` (then those results, their recorded
    inputs and their report go)."""
    if out.exists() and not out.is_dir():
        raise OutError(f"--out {out} is not a directory")
    results = out / "results.json"
    if (results.exists() or results.is_symlink()) and not force:
        raise OutError(f"{out} holds an earlier run's results; choose another --out or pass --force to replace them")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutError(f"--out {out} cannot be created: {e.strerror or e}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-probe-"):
            pass
    except OSError as e:
        raise OutError(f"--out {out} is not writable: a file cannot be created in it ({e.strerror or e})") from None
    if results.exists() or results.is_symlink():
        from orchestrator.report import HTML_NAME, ITERATIONS_CSV, LINKS_CSV, TIMESERIES_CSV

        try:
            for name in ("results.json", INPUTS_FILE, HTML_NAME, TIMESERIES_CSV, LINKS_CSV, ITERATIONS_CSV):
                (out / name).unlink(missing_ok=True)
        except OSError as e:
            raise OutError(f"the earlier results in {out} cannot be replaced: {e.strerror or e}") from None
    return out


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


def render_k8s(scenario: Scenario, args: argparse.Namespace) -> int:
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
    lines.extend(_job_lines(results))
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
    return "\n".join(printable(line) for line in lines)


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
