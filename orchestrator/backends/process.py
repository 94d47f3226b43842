"""The process backend: one OS process per host on loopback, each serving gRPC on a free port.

Hosts write their logs to ``<log_dir>/<host>.log``; a host that exits or stops answering fails the
run with its name and the tail of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import structlog
from testbed.sync.v1 import sync_pb2, sync_pb2_grpc

from emulators.runtime import BusMessage
from emulators.topology import Scenario, scenario_to_dict
from orchestrator.coordinator import HostFailed, Report
from orchestrator.partition import Plan
from services.codec import decode_bus, encode_bus
from services.host import GRPC_OPTIONS, KEEPALIVE_OPTIONS

log = structlog.get_logger("process-backend")

STARTUP_TIMEOUT_S = 30.0
HOST_COMMAND = (sys.executable, "-m", "services.host")


class ProcessHost:
    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path, window_timeout_s: float):
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self.window_timeout_s = window_timeout_s
        self.address = ""
        self.channel: grpc.aio.Channel | None = None
        self.control: Any = None
        self._sync: Any = None
        self._window = 0

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    async def _call(self, what: str, call: Any) -> Any:
        try:
            return await asyncio.wait_for(call, self.window_timeout_s)
        except TimeoutError:
            raise HostFailed(self.name, f"no answer to {what} within {self.window_timeout_s:g} s") from None
        except grpc.aio.AioRpcError as e:
            raise HostFailed(self.name, f"{what}: {e.code().name}: {e.details()}") from None

    async def _exchange(self, advance: Any) -> Report:
        await self._call("Sync", self._sync.write(advance))
        reply = await self._call("Sync", self._sync.read())
        if reply is grpc.aio.EOF:
            raise HostFailed(self.name, "closed its Sync stream")
        return Report(reply.next_ps, reply.min_sent_arrival_ps, dict(reply.sent_total), decode_bus(reply.bus))

    async def start(self) -> Report:
        self._sync = self.control.Sync()
        return await self._exchange(sync_pb2.Advance(start=True))

    async def advance(self, end_ps: int, expect_from: dict[str, int], bus: list[BusMessage]) -> Report:
        self._window += 1
        return await self._exchange(sync_pb2.Advance(window=self._window, end_ps=end_ps,
                                                     expect_from=expect_from, bus=encode_bus(bus)))

    async def close(self) -> None:
        """End the Sync stream: the host is done with this run."""
        if self._sync is not None:
            await self._sync.done_writing()

    async def results(self) -> dict[str, Any]:
        reply = await self._call("Results", self.control.Results(sync_pb2.ResultsRequest()))
        results: dict[str, Any] = json.loads(reply.results_json)
        return results


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

    def failure(self, host: ProcessHost) -> HostFailed:
        tail = host.log_tail()
        reason = f"process exited with code {host.proc.returncode}"
        return HostFailed(host.name, reason + (f"; last log lines: {tail}" if tail else ""))

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM every host, give them ``grace_s`` together to finish, then SIGKILL the rest."""
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
        for h in self.hosts:
            if h.channel is not None:
                await h.channel.close()


async def launch(scenario: Scenario, plan: Plan, run_id: str, log_dir: Path, window_timeout_s: float,
                 host_command: tuple[str, ...] = HOST_COMMAND) -> ProcessCluster:
    """Start one host process per host of ``plan``, load and connect them. ``host_command`` starts a
    host (services.host's command line follows it): a test may start hosts that know more device kinds."""
    log_dir.mkdir(parents=True, exist_ok=True)
    hosts: list[ProcessHost] = []
    for name in plan.hosts:
        log_path = log_dir / f"{name}.log"
        with open(log_path, "wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *host_command, "--name", name, "--listen", "127.0.0.1:0",
                "--exit-with-parent", stdout=asyncio.subprocess.PIPE, stderr=log_file,
                stdin=asyncio.subprocess.DEVNULL)
        hosts.append(ProcessHost(name, proc, log_path, window_timeout_s))
        log.info("host started", host=name, pid=proc.pid)
    cluster = ProcessCluster(hosts)
    try:
        await asyncio.gather(*(_await_listening(h) for h in hosts))
        scenario_json = json.dumps(scenario_to_dict(scenario))
        await asyncio.gather(*(
            h._call("Load", h.control.Load(sync_pb2.LoadRequest(
                run_id=run_id, host=h.name, scenario_json=scenario_json, assignment=plan.assignment)))
            for h in hosts))
        addresses = {h.name: h.address for h in hosts}
        await asyncio.gather(*(
            h._call("Connect", h.control.Connect(sync_pb2.ConnectRequest(peer_addresses=addresses)))
            for h in hosts))
    except BaseException:
        await cluster.stop()
        raise
    return cluster


async def _await_listening(host: ProcessHost) -> None:
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
    host.address = text.split()[1]
    host.channel = grpc.aio.insecure_channel(host.address, options=GRPC_OPTIONS + KEEPALIVE_OPTIONS)
    host.control = sync_pb2_grpc.HostControlStub(host.channel)
