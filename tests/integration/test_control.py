"""The control service of a live, paced run: faults injected at a virtual time equal the same faults
in the scenario's timeline, bad requests get proper status codes, and `testbed replay` reproduces
the run exactly."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import yaml
from testbed.control.v1 import control_pb2, control_pb2_grpc

from orchestrator.results import deterministic_view
from orchestrator.run import run_scenario
from orchestrator.scenario.loader import load_scenario
from tests.helpers import TESTBED, run_cli

pytestmark = pytest.mark.integration

SCENARIO = Path("scenarios/testers.yaml")
FAULTS = [{"link": "lan-a", "state": "down", "at": "7ms"}, {"link": "lan-a", "state": "up", "at": "9ms"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def live_run(out: Path, inject: list[dict]) -> tuple[list[object], list[tuple[grpc.StatusCode, str]]]:
    """Run the scenario paced, across two host processes, with the control service on loopback;
    inject ``inject`` once it runs, then try a few bad requests. Returns the replies and the errors."""
    address = f"127.0.0.1:{free_port()}"
    run = subprocess.Popen([*TESTBED, "run", str(SCENARIO), "--pace", "0.002", "--control", address, "--out",
                            str(out), "--partition", "site", "--backend", "process", "--no-progress"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        fast_reconnect = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
                          ("grpc.max_reconnect_backoff_ms", 100)]  # the service starts after the hosts
        with grpc.insecure_channel(address, options=fast_reconnect) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            deadline = time.monotonic() + 60
            state = stub.GetState(control_pb2.GetStateRequest(), wait_for_ready=True, timeout=60)
            while not state.running and time.monotonic() < deadline:
                time.sleep(0.02)
                state = stub.GetState(control_pb2.GetStateRequest(), timeout=5)
            assert state.running and state.virtual_ps < 5_000_000_000, state
            assert_hosts_answer_at_their_addresses(state)
            replies = [stub.InjectFault(control_pb2.InjectFaultRequest(fault_json=json.dumps(f)), timeout=30)
                       for f in inject]
            while stub.GetState(control_pb2.GetStateRequest(), timeout=5).virtual_ps < 2_000_000_000:
                time.sleep(0.02)  # past 1 ms: a fault due then comes too late
            errors = []
            for bad in ('{"link": "nope", "state": "down"}', "{oops", '["a list"]', '{"link": "wan", "at": "1ms", '
                        '"state": "down"}', '{"link": "wan", "state": "down", "at": "1s"}'):
                with pytest.raises(grpc.RpcError) as caught:
                    stub.InjectFault(control_pb2.InjectFaultRequest(fault_json=bad), timeout=30)
                errors.append((caught.value.code(), caught.value.details()))
        output, _ = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 0, output
    return replies, errors


def assert_hosts_answer_at_their_addresses(state: object) -> None:
    """GetState lists the partition's hosts, each with the devices it runs and an address where its
    gNMI service answers for them."""
    from pygnmi.spec.v080 import gnmi_pb2, gnmi_pb2_grpc

    from orchestrator.partition import plan_partition

    plan = plan_partition(load_scenario(SCENARIO), "site")
    hosts = state.hosts  # type: ignore[attr-defined]
    assert [(h.name, tuple(h.devices)) for h in hosts] == list(plan.hosts.items())
    for h in hosts:
        assert h.address.startswith("127.0.0.1:"), h
        with grpc.insecure_channel(h.address) as channel:
            device = h.devices[0]
            request = gnmi_pb2.GetRequest(prefix=gnmi_pb2.Path(target=device), path=[gnmi_pb2.Path(
                elem=[gnmi_pb2.PathElem(name="system"), gnmi_pb2.PathElem(name="state")])],
                encoding=gnmi_pb2.Encoding.Value("JSON"))
            reply = gnmi_pb2_grpc.gNMIStub(channel).Get(request, timeout=10)
            assert reply.notification[0].prefix.target == device


def test_injected_faults_equal_the_same_faults_in_the_timeline_and_replay_reproduces_the_run(tmp_path):
    out = tmp_path / "live"
    replies, errors = live_run(out, FAULTS)
    assert [(r.faults[0].at_ps, r.faults[0].change) for r in replies] == [  # type: ignore[attr-defined]
        (7_000_000_000, "state=down"), (9_000_000_000, "state=up")]
    codes = [code for code, _ in errors]
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 3 + [grpc.StatusCode.FAILED_PRECONDITION,
                                                               grpc.StatusCode.INVALID_ARGUMENT]
    assert "no link named 'nope'" in errors[0][1] and "not JSON" in errors[1][1]
    assert "the run has reached" in errors[3][1] and "faults[" in errors[4][1]

    live = json.loads((out / "results.json").read_text())
    document = yaml.safe_load(SCENARIO.read_text())
    document["faults"] = [*document["faults"], *FAULTS]
    written = tmp_path / "timeline.yaml"
    written.write_text(yaml.safe_dump(document, sort_keys=False))
    in_timeline = run_scenario(load_scenario(written))
    in_timeline["scenario"]["source"] = live["scenario"]["source"]
    assert deterministic_view(live) == deterministic_view(in_timeline)
    assert live["flows"]["local-a"]["rx_frames"] < in_timeline["flows"]["local-b"]["rx_frames"] * 2  # it bit

    inputs = json.loads((out / "inputs.json").read_text())
    assert inputs["faults"] == FAULTS
    replay = run_cli("replay", str(out))
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "replay identical" in replay.stdout


def test_replay_of_a_directory_without_inputs_is_a_one_line_error(tmp_path):
    done = run_cli("replay", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "is not a recorded run" in done.stderr


def test_a_control_address_that_is_not_host_port_is_a_one_line_error(tmp_path):
    done = run_cli("run", str(SCENARIO), "--control", "nowhere", "--out", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --control 'nowhere' is not a host:port; give one such as 127.0.0.1:50070"]


def test_the_control_service_requires_the_token_when_one_is_configured(tmp_path):
    import os

    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, TESTBED_TOKEN="s3cret")
    run = subprocess.Popen([*TESTBED, "run", str(SCENARIO), "--pace", "0.01", "--control", address, "--out",
                            str(tmp_path), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env=env)
    try:
        with grpc.insecure_channel(address, options=[("grpc.initial_reconnect_backoff_ms", 50),
                                                     ("grpc.max_reconnect_backoff_ms", 100)]) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetState(control_pb2.GetStateRequest(), wait_for_ready=True, timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            state = stub.GetState(control_pb2.GetStateRequest(), metadata=[("authorization", "Bearer s3cret")],
                                  timeout=30)
            assert state.scenario == "testers"
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetState(control_pb2.GetStateRequest(), metadata=[("authorization", "Bearer wrong")], timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            for fault in ('{"link": "lan-a", "state": "down"}', "[" * 10_000):  # the token first, then the JSON
                with pytest.raises(grpc.RpcError) as caught:
                    stub.InjectFault(control_pb2.InjectFaultRequest(fault_json=fault), timeout=30)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 0


def test_no_fault_request_crashes_the_run_and_what_was_taken_replays_exactly(tmp_path):
    """Fuzz: a few hundred requests of random shapes (keys of the fault vocabulary and others, values
    of every JSON type, some valid) while the run goes. Each gets OK, INVALID_ARGUMENT or
    FAILED_PRECONDITION; the run ends normally; what it took replays to the same results."""
    import random

    rng = random.Random(7)
    keys = ["at", "link", "state", "rate", "ber", "length", "wan", "cut", "repair", "device", "fabric", "plane",
            "flexo", "lightpath", "bogus", ""]
    values = ["down", "up", "lan-a", "lan-b", "wan", "tester-a", "1e-9", "400G", "1km", "12ms", "-1ms", "0ps",
              "x" * 300, "", 0, -1, 1.5, 10**30, True, None, [], ["down"], {}, {"a": 1}, "working", "both", "a"]

    def request() -> str:
        kind = rng.random()
        if kind < 0.05:
            return rng.choice(["", "{", "[]", "null", "42", '"text"', "{}" * 3])
        fault = {rng.choice(keys): rng.choice(values) for _ in range(rng.randint(0, 5))}
        if kind < 0.5:  # mostly well-formed link faults, some of them in the future
            fault = {"link": rng.choice(["lan-a", "lan-b", "wan"]), rng.choice(["state", "ber", "rate"]):
                     rng.choice(values)} | ({"at": rng.choice(["12ms", "13ms", "-1ms", "1ms"])} if rng.random() < .5
                                             else {})
        return json.dumps(fault)

    address = f"127.0.0.1:{free_port()}"
    out = tmp_path / "fuzzed"
    run = subprocess.Popen([*TESTBED, "run", str(SCENARIO), "--pace", "0.002", "--control", address, "--out",
                            str(out), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    codes: dict[str, int] = {}
    try:
        with grpc.insecure_channel(address, options=[("grpc.initial_reconnect_backoff_ms", 50),
                                                     ("grpc.max_reconnect_backoff_ms", 100)]) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            stub.GetState(control_pb2.GetStateRequest(), wait_for_ready=True, timeout=30)
            for _ in range(300):
                try:
                    stub.InjectFault(control_pb2.InjectFaultRequest(fault_json=request()), timeout=30)
                    codes["OK"] = codes.get("OK", 0) + 1
                except grpc.RpcError as e:
                    if e.code() == grpc.StatusCode.UNAVAILABLE:  # the run is over: its service with it
                        break
                    codes[e.code().name] = codes.get(e.code().name, 0) + 1
                    assert e.details()
        output, _ = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 0, output
    assert set(codes) <= {"OK", "INVALID_ARGUMENT", "FAILED_PRECONDITION"}, codes
    assert codes.get("OK", 0) > 0 and codes.get("INVALID_ARGUMENT", 0) > 0 and sum(codes.values()) >= 50
    replay = run_cli("replay", str(out))
    assert replay.returncode == 0, replay.stdout + replay.stderr


def test_a_live_length_change_below_the_lookahead_of_a_cut_link_is_refused_in_process() -> None:
    """In-process check of the rule that keeps conservative sync safe: the WAN link joins the two
    hosts of the site partition, so it may not get shorter than the windows rest on."""
    from orchestrator.control import FaultInputs, InputError
    from orchestrator.partition import plan_partition

    scenario = load_scenario(SCENARIO)
    inputs = FaultInputs(scenario, plan_partition(scenario, "site"))
    with pytest.raises(InputError, match="cannot get shorter") as caught:
        inputs.resolve({"link": "wan", "length": "1km", "at": "3ms"}, 0)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    entry, added = inputs.resolve({"link": "wan", "length": "400km", "at": "3ms"}, 0)  # longer is fine
    assert [f.length_mm for f in added] == [400_000_000] and not inputs.written
    inputs.accept(entry, added)
    assert inputs.written == [entry]
