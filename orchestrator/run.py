"""Running a scenario: plan the partition, start the hosts on a backend, drive the clock, write results."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from emulators.runtime import HostRuntime
from emulators.topology import Scenario
from orchestrator.backends.inproc import start_inproc
from orchestrator.coordinator import Coordinator, HostFailed, HostHandle, RunOutcome
from orchestrator.deploy import DeployOptions
from orchestrator.partition import Plan, plan_partition
from orchestrator.results import assemble

if TYPE_CHECKING:
    from orchestrator.control import FaultInputs

INPUTS_FILE = "inputs.json"  # the faults injected into a run (orchestrator.control)


class ControlError(OSError):
    """The control service could not start where it was asked to listen."""

BACKENDS = ("inproc", "process")  # on this machine alone
DEPLOY_BACKENDS = ("docker", "k8s")  # hosts in containers or pods, from the testbed image

log = structlog.get_logger("run")

EXIT_GRACE_S = 1.0  # how long a failed run waits to learn whether the failed host's process or container ended


class RunFailed(RuntimeError):
    """The run stopped early; ``results`` holds what was collected (and was written, if asked)."""

    def __init__(self, message: str, results: dict[str, Any]) -> None:
        super().__init__(message)
        self.results = results


def run_scenario(scenario: Scenario, partition: str = "single", backend: str = "inproc",
                 out_dir: Path | None = None, window_timeout_s: float = 60.0,
                 progress: Callable[[int], None] | None = None,
                 deploy: DeployOptions | None = None, pace: float | None = None,
                 control: str | None = None,
                 prepare: Callable[[HostRuntime], None] | None = None) -> dict[str, Any]:
    """Run ``scenario`` and return results.json's content (also written to ``out_dir`` if given).
    ``progress(end_ps)`` hears of the virtual time reached after every window; ``deploy`` says how
    the docker and k8s backends deploy the hosts; ``pace`` holds virtual time at wall time x pace;
    ``control`` (host:port) serves the control service there while the run goes, and the faults it
    injects are written to ``out_dir``/inputs.json; ``prepare`` (backend inproc) sees every host's
    runtime before the run (a replay puts recorded gNMI Sets on their timelines).

    Raises PartitionError for an impossible partition, RunFailed when a host fails mid-run,
    DeployError when the docker or k8s backend cannot deploy the hosts.
    """
    if backend not in BACKENDS + DEPLOY_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS + DEPLOY_BACKENDS)}")
    plan = plan_partition(scenario, partition)
    run_id = uuid.uuid4().hex[:12]
    structlog.contextvars.bind_contextvars(run_id=run_id, scenario=scenario.name)
    log.info("run starting", partition=partition, backend=backend, hosts=len(plan.hosts),
             lookahead_ps=plan.lookahead_ps)
    if out_dir is not None:  # an earlier run's inputs must not pass for this one's
        (out_dir / INPUTS_FILE).unlink(missing_ok=True)
    inputs = None
    if control is not None:
        from orchestrator.control import FaultInputs  # it needs the generated gRPC stubs

        inputs = FaultInputs(scenario, plan)
    drive = _driver(inputs, control)
    if backend == "inproc":
        hosts = start_inproc(scenario, plan)
        if prepare is not None:
            for host in hosts:
                prepare(host.runtime)  # type: ignore[attr-defined]
        outcome = asyncio.run(drive(Coordinator(scenario, plan, hosts, progress, pace)))
    else:
        log_dir = (out_dir or Path("out")) / "hosts"
        launch = _launcher(backend, scenario, plan, run_id, log_dir, window_timeout_s, deploy or DeployOptions())
        outcome = asyncio.run(_run_cluster(launch, scenario, plan, progress, pace, drive))
    if outcome.injected:  # the results show the timeline the run had
        scenario = dataclasses.replace(scenario, faults=(*scenario.faults, *outcome.injected))
    if inputs is not None and out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / INPUTS_FILE).write_text(json.dumps(inputs.record(), indent=1) + "\n")
    results = assemble(scenario, plan, backend, outcome.host_results, windows=outcome.windows,
                       wall_seconds=outcome.wall_seconds, end_ps=outcome.end_ps, error=outcome.error,
                       failed_host=outcome.failed_host)
    if pace is not None:
        results["run"].update(pace=pace, behind_s=round(outcome.behind_s, 6))
    if out_dir is not None:
        write_results(results, out_dir)
        write_gnmi_sets(collect_gnmi_sets(outcome.host_results), out_dir, scenario, merge=inputs is not None)
    if outcome.error:
        raise RunFailed(outcome.error, results)
    log.info("run finished", windows=outcome.windows, wall_seconds=round(outcome.wall_seconds, 3))
    return results


def write_results(results: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    return path


def collect_gnmi_sets(host_results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every gNMI Set the hosts applied, in the order they took effect: virtual time, then the timeline
    index each took (a link's two ends may both be Set at one time: the index says which came last),
    then host."""
    sets = [dict(i, host=host) for host, hr in host_results.items() for i in hr.get("inputs", [])]
    return sorted(sets, key=lambda i: (i["at_ps"], i.get("index", 0), i["host"], i["seq"]))


def write_gnmi_sets(sets: list[dict[str, Any]], out_dir: Path, scenario: Scenario, *,
                    merge: bool = False) -> Path | None:
    """``gnmi_sets`` of ``out_dir``/inputs.json when the run had any (none: nothing written). With
    ``merge`` the file this run already wrote (its injected faults) keeps what it holds."""
    if not sets:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / INPUTS_FILE
    record = json.loads(path.read_text()) if merge and path.exists() else {}
    record.setdefault("scenario", scenario.source)  # what `testbed replay` runs again
    record.setdefault("seed", scenario.seed)
    record.setdefault("faults", [])
    record["gnmi_sets"] = sets
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def _launcher(backend: str, scenario: Scenario, plan: Plan, run_id: str, log_dir: Path, window_timeout_s: float,
              deploy: DeployOptions) -> Callable[[], Awaitable[Any]]:
    """A coroutine function that starts, loads and connects the hosts on ``backend``: a cluster."""
    # imported here: they need the generated gRPC stubs (and the docker SDK, kubectl)
    if backend == "process":
        from orchestrator.backends.process import launch as launch_processes

        return lambda: launch_processes(scenario, plan, run_id, log_dir, window_timeout_s)
    if backend == "docker":
        from orchestrator.backends.docker import launch as launch_containers

        return lambda: launch_containers(scenario, plan, run_id, log_dir, window_timeout_s, deploy)
    from orchestrator.backends.k8s import launch as launch_pods

    return lambda: launch_pods(scenario, plan, run_id, log_dir, window_timeout_s, deploy)


Drive = Callable[[Coordinator], Coroutine[Any, Any, RunOutcome]]


def _driver(inputs: FaultInputs | None, control: str | None) -> Drive:
    """How to run a coordinator: on its own, or with the control service beside it."""

    async def drive(coordinator: Coordinator) -> RunOutcome:
        if inputs is None or control is None:
            return await coordinator.run()
        from orchestrator.control import serve_control

        server = await serve_control(coordinator, inputs, control)
        try:
            return await coordinator.run()
        finally:
            await server.stop(grace=0.5)

    return drive


async def _run_cluster(launch: Callable[[], Awaitable[Any]], scenario: Scenario, plan: Plan,
                       progress: Callable[[int], None] | None, pace: float | None = None,
                       drive: Drive | None = None) -> RunOutcome:
    """Drive hosts that run outside this process. A cluster has ``hosts`` (RemoteHost), and
    ``first_exit()`` (completes when a host's process, container or pod ends), ``failure(host)``,
    ``kill(host)``, ``alive()`` and ``stop(grace_s)``."""
    cluster = await launch()
    hosts: list[HostHandle] = list(cluster.hosts)
    coordinator = Coordinator(scenario, plan, hosts, progress, pace)
    t0 = time.perf_counter()
    stop_grace_s = 5.0
    try:
        run = asyncio.ensure_future(drive(coordinator) if drive is not None else coordinator.run())
        exited = asyncio.ensure_future(cluster.first_exit())
        done, _ = await asyncio.wait({run, exited}, return_when=asyncio.FIRST_COMPLETED)
        failure: HostFailed | None = None
        if run in done:
            try:
                outcome: RunOutcome = run.result()
                exited.cancel()
                await asyncio.gather(*(h.close() for h in cluster.hosts))
                return outcome
            except HostFailed as e:
                failure = e
            # a host that broke its stream is often ending: if so, its exit says why, and better
            with contextlib.suppress(TimeoutError):
                ended = await asyncio.wait_for(asyncio.shield(exited), EXIT_GRACE_S)
                if ended.name == failure.host:
                    failure = await cluster.failure(ended)
            exited.cancel()
        else:
            run.cancel()
            # the clock may have failed on the same host meanwhile: collect that, the exit says it better
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run
            failure = await cluster.failure(exited.result())
        # keep what the survivors measured
        assert failure is not None
        log.error("run failed", host=failure.host, error=str(failure))
        for h in cluster.hosts:
            if h.name == failure.host:
                await cluster.kill(h)  # it is out of this run anyway
        survivors = [h for h in await cluster.alive() if h.name != failure.host]
        for h in survivors:
            h.window_timeout_s = 2.0
        partial: dict[str, dict[str, Any]] = {}
        for h, got in zip(survivors, await asyncio.gather(*(h.results() for h in survivors),
                                                          return_exceptions=True), strict=True):
            if isinstance(got, BaseException):
                log.warning("no partial results", host=h.name, error=str(got))
            else:
                partial[h.name] = got
        stop_grace_s = 1.0
        return RunOutcome(partial, coordinator.windows, time.perf_counter() - t0, coordinator.end_ps,
                          error=str(failure), failed_host=failure.host, behind_s=coordinator.behind_s,
                          injected=list(coordinator.injected))
    finally:
        await cluster.stop(stop_grace_s)
