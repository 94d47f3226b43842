"""The clock's bookkeeping of frames between hosts: counted per sending peer, never in total."""

from __future__ import annotations

import asyncio
from typing import Any

from emulators.kernel.vtime import NEVER
from emulators.runtime import HostRuntime
from orchestrator.coordinator import Coordinator, Report
from orchestrator.partition import plan_partition
from orchestrator.scenario.loader import parse_scenario
from tests.helpers import two_testers

SCENARIO = parse_scenario(two_testers(duration="20us", length="1km"), "<t>")


class FakeHost:
    """Sends ``per_window`` frames to every other host each window and records what it was told."""

    def __init__(self, name: str, others: list[str], per_window: int) -> None:
        self.name = name
        self.others = others
        self.per_window = per_window
        self.sent = 0
        self.now = 0
        self.told: list[dict[str, int]] = []

    def _report(self) -> Report:
        return Report(NEVER if self.now >= 20_000_000 else self.now, self.now + 4_900_000,
                      {peer: self.sent for peer in self.others})

    async def start(self) -> Report:
        return self._report()

    async def advance(self, end_ps: int, expect_from: dict[str, int], bus: list[Any], start_ps: int = 0) -> Report:
        self.told.append(dict(expect_from))
        self.sent += self.per_window
        self.now = end_ps
        return self._report()

    async def results(self) -> dict[str, Any]:
        return {}


def test_each_host_is_told_what_each_peer_sent_it_so_far() -> None:
    plan = plan_partition(SCENARIO, "device")
    a, b = FakeHost("ta", ["tb"], 3), FakeHost("tb", ["ta"], 5)
    asyncio.run(Coordinator(SCENARIO, plan, [a, b]).run())
    assert a.told[:3] == [{"tb": 0}, {"tb": 5}, {"tb": 10}]
    assert b.told[:3] == [{"ta": 0}, {"ta": 3}, {"ta": 6}]


def test_a_fast_peers_extra_frames_do_not_stand_in_for_a_slow_peers() -> None:
    host = HostRuntime(SCENARIO, "x", {d.name: "x" if d.name == "ta" else "y" for d in SCENARIO.devices})
    frame: Any = (NEVER, 0, 0, 0, "p0", None)  # never merged here: only counted
    host.deliver("fast", [frame] * 10)  # a peer already into the next window
    assert not host.holds_all({"fast": 4, "slow": 1})  # the slow peer's frame is still on its way
    host.deliver("slow", [frame])
    assert host.holds_all({"fast": 4, "slow": 1})


def test_a_paced_run_holds_virtual_time_at_wall_time_times_the_pace_and_changes_nothing_simulated() -> None:
    import time

    from orchestrator.results import deterministic_view
    from orchestrator.run import run_scenario

    scenario = parse_scenario(two_testers(duration="20ms", length="1km"), "<t>")
    pace = 0.1  # a tenth of a virtual second per wall second: 20 ms take at least 0.2 s
    t0 = time.perf_counter()
    paced = run_scenario(scenario, pace=pace)
    wall = time.perf_counter() - t0
    assert wall >= 0.020 / pace
    # windows of at most 50 ms of wall time: the counters move while people watch
    assert paced["run"]["windows"] >= 0.020 / pace / 0.05
    assert paced["run"]["pace"] == pace and paced["run"]["behind_s"] >= 0
    assert deterministic_view(paced) == deterministic_view(run_scenario(scenario))


def test_the_first_host_to_fail_stops_the_others_calls_before_its_failure_is_raised() -> None:
    from orchestrator.coordinator import HostFailed, gather_all

    ended: list[str] = []

    async def fails() -> None:
        await asyncio.sleep(0)
        raise HostFailed("tb", "closed its Sync stream")

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append("ta")

    async def run() -> None:
        await gather_all([waits(), fails()])

    try:
        asyncio.run(run())
    except HostFailed as e:
        assert str(e) == "device host 'tb' failed: closed its Sync stream"
    else:
        raise AssertionError("no failure")
    assert ended == ["ta"]


class FinishedStream:
    """A Sync stream the host has ended, as grpc.aio holds it: a write raises, the status says why."""

    def __init__(self, read: Any = None) -> None:
        self._read = read

    def done(self) -> bool:
        return True

    async def write(self, message: Any) -> None:
        raise asyncio.InvalidStateError("RPC already finished.")

    async def read(self) -> Any:
        return self._read

    async def code(self) -> Any:
        import grpc

        return grpc.StatusCode.CANCELLED

    async def details(self) -> str:
        return "Cancelled"


def _remote(timeout_s: float = 5.0) -> Any:
    from orchestrator.backends.remote import RemoteHost

    return RemoteHost("tb", timeout_s)


def _failure(awaitable: Any) -> str:
    from orchestrator.coordinator import HostFailed

    async def run() -> None:
        await awaitable

    try:
        asyncio.run(run())
    except HostFailed as e:
        assert e.host == "tb"
        return str(e)
    raise AssertionError("no HostFailed")


def test_every_way_a_call_to_a_host_breaks_is_that_host_failing() -> None:
    import grpc

    host = _remote()
    host._sync = FinishedStream()
    assert _failure(host.advance(10, {}, [])) == ("device host 'tb' failed: Sync: the stream ended "
                                                  "(CANCELLED: Cancelled)")
    host._sync = FinishedStream()
    host._sync.write = lambda message: asyncio.sleep(0)  # type: ignore[method-assign]
    host._sync._read = grpc.aio.EOF
    assert _failure(host.advance(10, {}, [])) == "device host 'tb' failed: closed its Sync stream"

    async def cancelled() -> None:  # what a read raises on a call grpc cancelled under it
        raise asyncio.CancelledError

    assert _failure(host._call("Sync", cancelled())) == "device host 'tb' failed: Sync: the call was cancelled"

    async def closed() -> None:
        raise grpc.aio.UsageError("Channel is closed.")

    assert _failure(host._call("Results", closed())) == "device host 'tb' failed: Results: Channel is closed."
    slow = _remote(0.01)
    assert _failure(slow._call("Load", asyncio.sleep(1))) == "device host 'tb' failed: no answer to Load within 0.01 s"


def test_a_run_that_stops_cancels_its_calls_to_a_host_without_blaming_the_host() -> None:
    host = _remote()

    async def run() -> bool:
        call = asyncio.ensure_future(host._call("Sync", asyncio.Event().wait()))
        await asyncio.sleep(0)
        call.cancel()
        try:
            await call
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(run())
