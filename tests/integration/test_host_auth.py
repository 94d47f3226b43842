"""Every service of a device host but health and reflection asks for the bearer token, and a host
takes frames only from its peers, in their window, for its own ports of the links they share.

Hosts are real processes on loopback. The attacks go in between two windows of a real run (the
coordinator's progress callback) and change nothing in its results; the frame checks run against a
lone host whose coordinator and peer this test plays.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from testbed.sync.v1 import sync_pb2, sync_pb2_grpc

from emulators.kernel.frame import DATA, Frame
from emulators.model.scenario import scenario_to_dict
from orchestrator.results import deterministic_view
from orchestrator.run import run_scenario
from orchestrator.scenario.loader import load_scenario, parse_scenario
from services.codec import encode_batch
from services.gnmi import gnmi_pb2, gnmi_pb2_grpc

pytestmark = pytest.mark.integration

TOKEN = "s3cret-of-the-tests"
AUTH = [("authorization", f"Bearer {TOKEN}")]
WRONG = [("authorization", "Bearer guessed")]
OK = None  # what `outcome` says of a call that succeeded

Outcome = tuple[grpc.StatusCode, str] | None


def outcome(call: Callable[[], Any]) -> Outcome:
    """How a call ends: None if it succeeds (a stream read to its end), else its status and details."""
    try:
        reply = call()
        if isinstance(reply, Iterator):
            list(reply)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return OK


def code(call: Callable[[], Any]) -> grpc.StatusCode | None:
    result = outcome(call)
    return None if result is None else result[0]


def frame(arrival_ps: int, device: int, port: str) -> tuple[Any, ...]:
    """A data frame of the scenario's flow 0, as the codec sends it to another host."""
    return arrival_ps, 0, 1 << 40, device, port, Frame(DATA, 0, 0, 0, 4096, 4096, seq=1 << 20)


Metadata = list[tuple[str, str]] | None


def exchange(channel: grpc.Channel, batches: list[Any], metadata: Metadata = AUTH) -> Callable[[], Any]:
    """An Exchange stream that sends ``batches``, half-closes and reads the host's side to its end."""
    return lambda: sync_pb2_grpc.FrameExchangeStub(channel).Exchange(iter(batches), metadata=metadata, timeout=10)


def control(channel: grpc.Channel, rpc: str, request: Any, metadata: Metadata) -> Callable[[], Any]:
    """A HostControl call (Sync: a stream of one ``request``)."""
    method = getattr(sync_pb2_grpc.HostControlStub(channel), rpc)
    return lambda: method(iter([request]) if rpc == "Sync" else request, metadata=metadata, timeout=5)


def gnmi_get(channel: grpc.Channel, target: str, metadata: Metadata) -> Callable[[], Any]:
    request = gnmi_pb2.GetRequest(prefix=gnmi_pb2.Path(target=target))
    return lambda: gnmi_pb2_grpc.gNMIStub(channel).Get(request, metadata=metadata, timeout=5)


def hello(name: str = "a") -> Any:
    """The first message of a frame stream: who sends it."""
    return sync_pb2.FrameBatch(from_host=name)


def no_packet_size(batch: Any) -> Any:
    batch.frames[0].mtu = 0
    return batch


def host_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


# -- a real run, attacked between two windows ---------------------------------------------------------


class RunAttack:
    """A progress callback: once the run is past ``after_ps``, it calls every host's services the
    ways an outsider (or a host that lost its way) would, and records how each call ended."""

    def __init__(self, run_dir: Path, after_ps: int) -> None:
        self.run_dir = run_dir
        self.after_ps = after_ps
        self.ended: dict[str, grpc.StatusCode | None] = {}
        self.hosts: dict[str, dict[str, Any]] = {}

    def __call__(self, end_ps: int) -> None:
        if self.ended or end_ps < self.after_ps:
            return
        for host in ("dc-a", "dc-b"):
            self.hosts[host] = next(e for e in host_lines(self.run_dir / "hosts" / f"{host}.log")
                                    if e["event"] == "serving")
        self.attack(end_ps)

    def channel(self, host: str) -> grpc.Channel:
        return grpc.insecure_channel(self.hosts[host]["address"])

    def attack(self, end_ps: int) -> None:
        scenario = load_scenario("scenarios/testers.yaml")
        ids = {d.name: i for i, d in enumerate(scenario.devices)}
        window = 1 << 20  # no window number makes these frames welcome: each is refused before it counts
        into_b = encode_batch("dc-a", window, [frame(end_ps + 1000, ids["tester-b"], "wan")])
        into_a = encode_batch("dc-b", window, [frame(end_ps + 1000, ids["tester-a"], "wan")])
        with self.channel("dc-a") as a, self.channel("dc-b") as b:
            calls = {
                "exchange without the token": exchange(b, [hello("dc-a"), into_b], None),
                "exchange with a wrong token": exchange(b, [hello("dc-a"), into_b], WRONG),
                "exchange as no peer": exchange(b, [hello("dc-x"), into_b]),
                "exchange as the connected peer again": exchange(b, [hello("dc-a"), into_b]),
                "exchange naming no host": exchange(b, [hello(""), into_b]),
                "exchange as a peer this host dials": exchange(a, [hello("dc-b"), into_a]),
            }
            for host, channel in (("a", a), ("b", b)):
                requests = {"Load": sync_pb2.LoadRequest(run_id="x", host=f"dc-{host}", scenario_json="{}"),
                            "Connect": sync_pb2.ConnectRequest(), "Sync": sync_pb2.Advance(start=True),
                            "Results": sync_pb2.ResultsRequest()}
                for who, metadata in (("without the token", None), ("with a wrong token", WRONG),
                                      ("with the token", AUTH)):
                    for rpc, request in requests.items():
                        if rpc != "Results" or metadata is not AUTH:
                            calls[f"{host}: {rpc} {who}"] = control(channel, rpc, request, metadata)
                    if metadata is not AUTH:
                        calls[f"{host}: gNMI Get {who}"] = gnmi_get(channel, f"tester-{host}", metadata)
            self.ended = {name: code(call) for name, call in calls.items()}


def test_a_run_attacked_between_windows_refuses_every_call_and_keeps_its_results(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TESTBED_TOKEN", TOKEN)
    scenario = load_scenario("scenarios/testers.yaml")
    clean = run_scenario(scenario, "site", "process", tmp_path / "clean")
    attack = RunAttack(tmp_path / "attacked", after_ps=2_000_000_000)  # the WAN flows are under way
    attacked = run_scenario(scenario, "site", "process", tmp_path / "attacked", progress=attack)

    unauthenticated, denied = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
    invalid, precondition = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
    expected = {
        "exchange without the token": unauthenticated,
        "exchange with a wrong token": unauthenticated,
        "exchange as no peer": denied,
        "exchange as the connected peer again": denied,
        "exchange naming no host": invalid,
        "exchange as a peer this host dials": denied,
    }
    for host in "ab":
        for rpc in ("Load", "Connect", "Sync", "Results", "gNMI Get"):
            expected |= {f"{host}: {rpc} without the token": unauthenticated,
                         f"{host}: {rpc} with a wrong token": unauthenticated}
        # with the token: still one Load, one Connect and one Sync stream per run
        expected |= {f"{host}: {rpc} with the token": precondition for rpc in ("Load", "Connect", "Sync")}
    assert attack.ended == expected

    # what the attack would have changed had one frame gone in: the WAN flows' counts
    assert attacked["status"] == "ok" and attacked["flows"]["wan-a-to-b"]["rx_frames"] > 0
    assert deterministic_view(attacked) == deterministic_view(clean)
    refusals = [e for host in ("dc-a", "dc-b") for e in host_lines(tmp_path / "attacked" / "hosts" / f"{host}.log")
                if e["level"] == "warning"]
    unauthenticated_logged = [e for e in refusals if e["event"] == "call without the token refused"]
    assert len(unauthenticated_logged) == 2 + 2 * 5 * 2
    assert all(e["peer"].startswith("ipv4:127.0.0.1:") and e["rpc"].startswith("/") for e in unauthenticated_logged)
    assert sum(e["event"] == "frame stream refused" for e in refusals) == 4  # the four with the token
    for path in (tmp_path / "attacked").rglob("*"):  # the token reaches neither logs nor results
        assert path.is_dir() or TOKEN not in path.read_text(errors="replace"), path


def test_without_testbed_token_a_run_has_a_token_of_its_own_for_internal_services(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("TESTBED_TOKEN", raising=False)
    monkeypatch.delenv("TESTBED_RUN_TOKEN", raising=False)
    seen: dict[str, Any] = {}

    def probe(end_ps: int) -> None:
        if seen:
            return
        for host in ("dc-a", "dc-b"):
            serving = next(e for e in host_lines(tmp_path / "hosts" / f"{host}.log") if e["event"] == "serving")
            environ = Path(f"/proc/{serving['pid']}/environ").read_bytes().split(b"\0")
            token = next(v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"TESTBED_RUN_TOKEN="))
            results = sync_pb2.ResultsRequest()
            with grpc.insecure_channel(serving["address"]) as channel:
                seen[host] = {
                    "token": token,
                    "Results": code(control(channel, "Results", results, None)),
                    "Results with a wrong token": code(control(channel, "Results", results, WRONG)),
                    "Results with the run's token": code(control(channel, "Results", results,
                                                                 [("authorization", f"Bearer {token}")])),
                    "Exchange": code(exchange(channel, [hello("dc-a")], None)),
                    "gNMI": code(gnmi_get(channel, host.replace("dc", "tester"), None)),
                }

    results = run_scenario(load_scenario("scenarios/testers.yaml"), "site", "process", tmp_path, progress=probe)
    assert results["status"] == "ok"
    tokens = {seen[h].pop("token") for h in seen}
    assert len(tokens) == 1 and len(tokens.pop()) >= 32 and "TESTBED_RUN_TOKEN" not in os.environ
    for host in ("dc-a", "dc-b"):
        assert seen[host] == {"Results": grpc.StatusCode.UNAUTHENTICATED,
                              "Results with a wrong token": grpc.StatusCode.UNAUTHENTICATED,
                              "Results with the run's token": OK,
                              "Exchange": grpc.StatusCode.UNAUTHENTICATED,
                              "gNMI": OK}  # gNMI stays open as documented: no TESTBED_TOKEN


def test_the_backends_hand_their_hosts_the_runs_token_in_the_environment(monkeypatch) -> None:
    from orchestrator.backends import docker
    from orchestrator.backends.remote import run_token, token_environment
    from orchestrator.deploy import DeployOptions
    from orchestrator.partition import plan_partition

    plan = plan_partition(load_scenario("scenarios/testers.yaml"), "site")
    monkeypatch.delenv("TESTBED_TOKEN", raising=False)
    first, second = run_token(), run_token()
    assert first != second and len(first) >= 32  # a fresh one per run
    assert token_environment(first) == {"TESTBED_RUN_TOKEN": first}  # for HostControl and FrameExchange only
    for spec in docker.host_specs("t", plan, "r", DeployOptions(), token=first):
        assert spec.run_kwargs["environment"] == {"TESTBED_RUN_TOKEN": first}
        assert first not in " ".join(spec.run_kwargs["command"])  # a command line is for everyone to read
    monkeypatch.setenv("TESTBED_TOKEN", TOKEN)
    assert run_token() == TOKEN and token_environment(TOKEN) == {"TESTBED_TOKEN": TOKEN}  # gNMI asks for it too
    for spec in docker.host_specs("t", plan, "r", DeployOptions(), token=run_token()):
        assert spec.run_kwargs["environment"] == {"TESTBED_TOKEN": TOKEN}


# -- a lone host, its coordinator and peer played by the test ----------------------------------------

# host "b" runs tb and tc; it shares link ab with host "a" (which dials it) and cd with host "d" (which it dials)
LONE = """
name: lone
duration: 1ms
devices:
  ta: {kind: tester, ports: [p0]}
  tb: {kind: tester, ports: [p0, p1]}
  tc: {kind: tester, ports: [p0, p1]}
  td: {kind: tester, ports: [p0]}
links:
  - {name: ab, a: ta/p0, z: tb/p0, rate: 100G, length: 1km}
  - {name: bc, a: tb/p1, z: tc/p0, rate: 100G, length: 1m}
  - {name: cd, a: tc/p1, z: td/p0, rate: 100G, length: 1km}
flows:
  - {name: f, src: ta/p0, dst: tb/p0, rate: 1G, frame: 4KiB, start: 500us, for: 400us}
"""
ASSIGNMENT = {"ta": "a", "tb": "b", "tc": "b", "td": "d"}
IDS = {"ta": 0, "tb": 1, "tc": 2, "td": 3}
END_PS = 1_000_000  # where the test's first window ends


class LoneHost:
    """A host process of a four-host plan, loaded and started; ``advance`` runs its windows."""

    def __init__(self, name: str, log: Path) -> None:
        env = dict(os.environ, TESTBED_TOKEN=TOKEN)
        env.pop("TESTBED_RUN_TOKEN", None)
        with open(log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "services.host", "--name", name],
                                         stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("LISTENING "), log.read_text()
        self.log = log
        self.channel = grpc.insecure_channel(line.split()[1])
        self.control = sync_pb2_grpc.HostControlStub(self.channel)
        scenario = parse_scenario(LONE, "<test>")
        self.control.Load(sync_pb2.LoadRequest(run_id="lone", host=name, scenario_json=json.dumps(
            scenario_to_dict(scenario)), assignment=ASSIGNMENT), metadata=AUTH, timeout=10)
        self._requests: queue.Queue[Any] = queue.Queue()
        self._reports = self.control.Sync(iter(self._requests.get, None), metadata=AUTH)
        self.window = 0
        self.advance(None)

    def advance(self, end_ps: int | None, expect_from: dict[str, int] | None = None) -> Any:
        """The start (end_ps None) or the next window to ``end_ps``; the host's report."""
        if end_ps is None:
            self._requests.put(sync_pb2.Advance(start=True))
        else:
            self.window += 1
            self._requests.put(sync_pb2.Advance(window=self.window, end_ps=end_ps, expect_from=expect_from or {}))
        return next(self._reports)

    def in_flight(self) -> dict[str, Any]:
        """Frames delivered and not yet simulated (those of flow f): what reached the runtime."""
        reply = self.control.Results(sync_pb2.ResultsRequest(), metadata=AUTH, timeout=10)
        in_flight: dict[str, Any] = json.loads(reply.results_json)["in_flight"]
        return in_flight

    def close(self) -> None:
        self._requests.put(None)
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def host_b(tmp_path: Path) -> Iterator[LoneHost]:
    host = LoneHost("b", tmp_path / "b.log")
    host.advance(END_PS)
    yield host
    host.close()



def test_a_peers_frames_in_their_window_reach_the_runtime(host_b: LoneHost) -> None:
    """The control case for the refusals below: the same frames, sent right, are taken."""
    batch = encode_batch("a", 2, [frame(END_PS + 5, IDS["tb"], "p0"), frame(END_PS + 9, IDS["tb"], "p0")])
    assert outcome(exchange(host_b.channel, [hello(), batch])) is OK
    assert host_b.in_flight() == {"f": {"frames": 2, "bytes": 8192}}
    host_b.advance(2 * END_PS, {"a": 2})
    assert host_b.in_flight() == {}  # received by tb inside the window


@pytest.mark.parametrize(("batches", "status", "words"), [
    ([encode_batch("a", 0, [frame(END_PS, IDS["tb"], "p0")])], "FAILED_PRECONDITION", "sent window 0 after window 0"),
    ([encode_batch("a", 3, [frame(END_PS, IDS["tb"], "p0")])], "FAILED_PRECONDITION",
     "sent window 3 after window 0, with host b at window 1"),
    ([encode_batch("a", 1, [frame(END_PS, IDS["tb"], "p0")]), encode_batch("a", 1, [frame(END_PS, IDS["tb"], "p0")])],
     "FAILED_PRECONDITION", "sent window 1 after window 1"),
    ([encode_batch("d", 1, [frame(END_PS, IDS["tb"], "p0")])], "PERMISSION_DENIED", "says it is from 'd'"),
    ([encode_batch("a", 1, [frame(END_PS, IDS["ta"], "p0")])], "INVALID_ARGUMENT", "device 0 port 'p0'"),
    ([encode_batch("a", 1, [frame(END_PS, IDS["tb"], "p1")])], "INVALID_ARGUMENT", "device 1 port 'p1'"),
    ([encode_batch("a", 1, [frame(END_PS, IDS["tc"], "p1")])], "INVALID_ARGUMENT", "device 2 port 'p1'"),
    ([encode_batch("a", 1, [frame(END_PS, IDS["tb"], "nope")])], "INVALID_ARGUMENT", "device 1 port 'nope'"),
    ([encode_batch("a", 1, [frame(END_PS, 99, "p0")])], "INVALID_ARGUMENT", "device 99 port 'p0'"),
    ([encode_batch("a", 1, [frame(END_PS, IDS["tb"], "p0"), frame(END_PS - 1, IDS["tb"], "p0")])],
     "INVALID_ARGUMENT", f"arriving at {END_PS - 1} ps, before host b's window end {END_PS} ps"),
    ([encode_batch("a", 1, [frame(-5, IDS["tb"], "p0")])], "INVALID_ARGUMENT", "arriving at -5 ps"),
    ([no_packet_size(encode_batch("a", 1, [frame(END_PS, IDS["tb"], "p0")]))], "INVALID_ARGUMENT",
     "undecodable frame"),
], ids=["the hello's window", "a window ahead of the run", "a window again", "another host's name",
        "a device of another host", "a port of a link inside the host", "a port of another peer's link",
        "a port the device lacks", "no such device", "one frame of two in the past", "a negative time",
        "a frame of no packet size"])
def test_a_peer_that_breaks_the_rules_is_refused_and_fails_the_next_window(host_b: LoneHost, batches: list[Any],
                                                                           status: str, words: str) -> None:
    taken = sum(len(b.frames) for b in batches[:-1])  # the batches before the last are right
    ended = outcome(exchange(host_b.channel, [hello(), *batches]))
    assert ended is not None and ended[0].name == status and words in ended[1], ended
    assert host_b.in_flight() == ({"f": {"frames": taken, "bytes": 4096 * taken}} if taken else {})
    # the peer's stream is the run's: a broken peer fails the run, naming it, rather than lose frames
    with pytest.raises(grpc.RpcError) as e:
        host_b.advance(2 * END_PS, {"a": taken + 1})
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and words in e.value.details()
    [logged] = [e for e in host_lines(host_b.log) if e["event"] == "frames refused"]
    assert logged["from_host"] == "a" and words in logged["reason"]


def test_streams_of_no_peer_are_refused_and_the_peers_own_goes_on(host_b: LoneHost) -> None:
    into_tb = encode_batch("a", 1, [frame(END_PS, IDS["tb"], "p0")])
    refused = {
        "no token": exchange(host_b.channel, [hello(), into_tb], None),
        "a wrong token": exchange(host_b.channel, [hello(), into_tb], WRONG),
        "a host that is no peer": exchange(host_b.channel, [hello("x"), into_tb]),
        "a peer this host dials": exchange(host_b.channel, [hello("d"), into_tb]),
        "itself": exchange(host_b.channel, [hello("b"), into_tb]),
        "frames in the hello": exchange(host_b.channel, [into_tb]),
        "no name": exchange(host_b.channel, [hello(""), into_tb]),
    }
    assert {case: code(call) for case, call in refused.items()} == {
        "no token": grpc.StatusCode.UNAUTHENTICATED, "a wrong token": grpc.StatusCode.UNAUTHENTICATED,
        "a host that is no peer": grpc.StatusCode.PERMISSION_DENIED,
        "a peer this host dials": grpc.StatusCode.PERMISSION_DENIED, "itself": grpc.StatusCode.PERMISSION_DENIED,
        "frames in the hello": grpc.StatusCode.INVALID_ARGUMENT, "no name": grpc.StatusCode.INVALID_ARGUMENT}
    assert host_b.in_flight() == {}
    # the real peer connects after all that, and a second stream claiming it is refused while it is open
    requests: queue.Queue[Any] = queue.Queue()
    requests.put(hello())
    requests.put(into_tb)
    peer = sync_pb2_grpc.FrameExchangeStub(host_b.channel).Exchange(iter(requests.get, None), metadata=AUTH)
    try:
        peer.initial_metadata()  # the host took the stream
        duplicate = outcome(exchange(host_b.channel, [hello(), encode_batch("a", 2, [])]))
        assert duplicate == (grpc.StatusCode.PERMISSION_DENIED, "peer host a is already connected")
        host_b.advance(2 * END_PS, {"a": 1})  # the real peer's frame came in
    finally:
        requests.put(None)
    assert outcome(lambda: peer) is OK


def test_connect_and_sync_are_once_per_run(host_b: LoneHost) -> None:
    connect = sync_pb2.ConnectRequest(peer_addresses={"a": "127.0.0.1:9", "d": "127.0.0.1:9"})
    control = host_b.control
    # b dials d: nobody serves there
    ended = outcome(lambda: control.Connect(connect, metadata=AUTH, timeout=10))
    assert ended is not None and ended[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert "peer host d at 127.0.0.1:9 did not take the frame stream: UNAVAILABLE" in ended[1]
    assert code(lambda: control.Connect(connect, metadata=AUTH, timeout=10)) == grpc.StatusCode.FAILED_PRECONDITION
    second = outcome(lambda: control.Sync(iter([sync_pb2.Advance(start=True)]), metadata=AUTH, timeout=10))
    assert second == (grpc.StatusCode.FAILED_PRECONDITION, "host b is already driven by another Sync stream")
    host_b.advance(2 * END_PS)  # the first one still drives it


class PlayedPeer(sync_pb2_grpc.FrameExchangeServicer):
    """Host "b" as host "a" dials it: it records the call's metadata, then sends ``batch``."""

    def __init__(self, batch: Any | None) -> None:
        self.batch = batch
        self.metadata: list[dict[str, str]] = []
        self.hellos: list[str] = []

    def Exchange(self, request_iterator: Any, context: Any) -> Any:
        self.metadata.append(dict(context.invocation_metadata()))
        self.hellos.append(next(request_iterator).from_host)
        if self.batch is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "played: wrong token")
        yield self.batch
        for _ in request_iterator:
            pass


@pytest.fixture
def played_b() -> Iterator[tuple[PlayedPeer, str]]:
    servicer = PlayedPeer(None)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    sync_pb2_grpc.add_FrameExchangeServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


@pytest.mark.parametrize("refuses", [False, True], ids=["takes the stream", "refuses the stream"])
def test_the_dialing_host_sends_the_token_and_checks_what_comes_back(tmp_path, played_b, refuses: bool) -> None:
    """Host a dials b (played here): with the token; and frames b sends that break the rules fail
    a's next window instead of reaching its runtime."""
    servicer, address = played_b
    servicer.batch = None if refuses else encode_batch("b", 1, [frame(END_PS, IDS["tb"], "p0")])
    host_a = LoneHost("a", tmp_path / "a.log")
    host_a.advance(END_PS)  # f starts later: nothing for b yet
    try:
        ended = outcome(control(host_a.channel, "Connect", sync_pb2.ConnectRequest(peer_addresses={"b": address}),
                                AUTH))
        assert servicer.hellos == ["a"] and servicer.metadata[0]["authorization"] == f"Bearer {TOKEN}"
        if refuses:
            assert ended == (grpc.StatusCode.FAILED_PRECONDITION,
                             f"peer host b at {address} did not take the frame stream: UNAUTHENTICATED: "
                             f"played: wrong token")
            return
        assert ended is OK
        with pytest.raises(grpc.RpcError) as e:
            host_a.advance(2 * END_PS, {"b": 1})
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "peer host b sent a frame for device 1 port 'p0'" in e.value.details()
        assert host_a.in_flight() == {}
        [logged] = [e for e in host_lines(host_a.log) if e["event"] == "frames refused; no longer reading the peer"]
        assert logged["peer"] == "b"
    finally:
        host_a.close()
