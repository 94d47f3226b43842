"""The process backend: one OS process per host on loopback, each serving gRPC on a free port.

Hosts write their logs to ``<log_dir>/<host>.log``; a host that exits or stops answering fails the
run with its name and the tail of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import structlog

from emulators.model.scenario import Scenario
from orchestrator.backends.remote import (
    RemoteHost,
    explain,
    load_and_connect,
    run_token,
    signal_name,
    stopped_on,
    token_environment,
)
from orchestrator.coordinator import HostFailed, gather_all
from orchestrator.partition import Plan

log = structlog.get_logger("process-backend")

STARTUP_TIMEOUT_S = 30.0
HOST_COMMAND = (sys.executable, "-m", "services.host")


class ProcessHost(RemoteHost):
    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path, window_timeout_s: float):
        super().__init__(name, window_timeout_s)
        self.proc = proc
        self.log_path = log_path

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return []

    def log_tail(self, lines: int = 5) -> str:
        return " | ".join(self.log_lines()[-lines:])


class ProcessCluster:
    def __init__(self, hosts: list[ProcessHost]) -> None:
        self.hosts = hosts

    async def first_exit(self) -> ProcessHost:
        """Completes when any host process exits: during a run, that is a failure."""
        waits = {asyncio.ensure_future(h.proc.wait()): h for h in self.hosts}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            return waits[next(iter(done))]
        finally:
            for w in waits:
                w.cancel()

    async def failure(self, host: ProcessHost) -> HostFailed:
        code = host.proc.returncode
        if code is not None and code < 0:
            reason = f"process killed by {signal_name(-code)}"
        else:
            reason = f"process exited with code {code}"
            if (on := stopped_on(host.log_lines())) is not None:
                reason += f" after {on}"
        tail = host.log_tail()
        return HostFailed(host.name, reason + (f"; last log lines: {tail}" if tail else ""))

    async def kill(self, host: ProcessHost) -> None:
        """SIGKILL: a frozen host would not act on SIGTERM."""
        if host.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                host.proc.kill()

    async def alive(self) -> list[ProcessHost]:
        return [h for h in self.hosts if h.proc.returncode is None]

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM every host, give them ``grace_s`` together to finish, then SIGKILL the rest. The
        coordinator's calls end first: a host's grace need not wait for them."""
        for h in self.hosts:
            await h.close_channel()
        for h in self.hosts:
            if h.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    h.proc.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(h.proc.wait()) for h in self.hosts]
        await asyncio.wait(waits, timeout=grace_s)
        for h in self.hosts:
            if h.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    h.proc.kill()
        await asyncio.gather(*waits)


async def launch(scenario: Scenario, plan: Plan, run_id: str, log_dir: Path, window_timeout_s: float,
                 host_command: tuple[str, ...] = HOST_COMMAND) -> ProcessCluster:
    """Start one host process per host of ``plan``, load and connect them. ``host_command`` starts a
    host (services.host's command line follows it): a test may start hosts that know more device kinds."""
    log_dir.mkdir(parents=True, exist_ok=True)
    token = run_token()
    environment = {**os.environ, **token_environment(token)}  # in the environment: others cannot read it
    cluster = ProcessCluster([])
    try:
        for name in plan.hosts:
            log_path = log_dir / f"{name}.log"
            with open(log_path, "wb") as log_file:
                # a process group of its own: a Ctrl-C in the terminal reaches the coordinator, which stops the
                # hosts (not a session of its own: the kernel's autogroups would schedule it apart, 12 % slower)
                proc = await asyncio.create_subprocess_exec(
                    *host_command, "--name", name, "--listen", "127.0.0.1:0",
                    "--exit-with-parent", stdout=asyncio.subprocess.PIPE, stderr=log_file,
                    stdin=asyncio.subprocess.DEVNULL, env=environment, process_group=0)
            cluster.hosts.append(ProcessHost(name, proc, log_path, window_timeout_s))
            log.info("host started", host=name, pid=proc.pid)
        await gather_all(_await_listening(h, token) for h in cluster.hosts)
        await load_and_connect(list(cluster.hosts), scenario, plan, run_id)
    except HostFailed as e:
        failure = await explain(cluster, e)
        await cluster.stop()
        raise failure from None
    except BaseException:
        await cluster.stop()
        raise
    return cluster


async def _await_listening(host: ProcessHost, token: str) -> None:
    assert host.proc.stdout is not None
    try:
        line = await asyncio.wait_for(host.proc.stdout.readline(), STARTUP_TIMEOUT_S)
    except TimeoutError:
        raise HostFailed(host.name, f"did not start serving within {STARTUP_TIMEOUT_S:g} s") from None
    text = line.decode(errors="replace").strip()
    if not text.startswith("LISTENING "):
        await host.proc.wait()
        tail = host.log_tail()
        raise HostFailed(host.name, f"did not start (exit code {host.proc.returncode}): {tail or text}")
    host.attach(text.split()[1], token)
