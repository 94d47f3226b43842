"""The management services' limits, tried as a hostile client would: every malformed request of
tests/data/malformed/{gnmi,control}/cases.yaml gets its status code and a message naming what to
change, from a real host or a real run on loopback; a STREAM subscriber that never reads is dropped
while the run goes on, its host's memory bounded; a host serves a bounded number of subscriptions."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import text_format
from pygnmi.spec.v080 import gnmi_pb2, gnmi_pb2_grpc
from testbed.control.v1 import control_pb2, control_pb2_grpc

from services.gnmi_messages import MAX_LEAVES, MAX_PATHS, MAX_PENDING, MAX_SUBSCRIPTIONS
from tests.helpers import TESTBED
from tests.integration.gnmi_host import DrivenHost
from tests.unit.test_gnmi_paths import INCAST

pytestmark = pytest.mark.integration

DATA = Path(__file__).parents[1] / "data" / "malformed"
US = 1_000_000  # ps
MACRO = re.compile(r"<<(\d+)\*(.*?)>>", re.S)


def expand(text: str) -> str:
    """A case's text with each <<N*TEXT>> written out: TEXT N times, {i} in it counting from 0."""
    return MACRO.sub(lambda m: "".join(m[2].replace("{i}", str(i)) for i in range(int(m[1]))), text)


def cases(kind: str) -> list[Any]:
    return [pytest.param(case, id=case["name"]) for case in yaml.safe_load((DATA / kind / "cases.yaml").read_text())]


def test_the_macro_writes_text_out() -> None:
    assert expand('{<<3*"k{i}": 1, >>"z": 0}') == '{"k0": 1, "k1": 1, "k2": 1, "z": 0}'
    assert expand("<<2*[>>1<<2*]>>") == "[[1]]" and expand("no macro") == "no macro"


# -- gNMI ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gnmi_host() -> Iterator[DrivenHost]:
    h = DrivenHost(INCAST)
    h.start()
    h.advance(50 * US)
    yield h
    h.close()


def gnmi_call(channel: grpc.Channel, case: dict[str, Any]) -> None:
    stub = gnmi_pb2_grpc.gNMIStub(channel)
    if "raw" in case:  # bytes that are not the rpc's message
        method, data = f"/gnmi.gNMI/{case['rpc']}", bytes.fromhex(case["raw"])
        if case["rpc"] == "Subscribe":
            list(channel.stream_stream(method, request_serializer=bytes, response_deserializer=bytes)(
                iter([data]), timeout=30))
        else:
            channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)(data, timeout=30)
    elif case["rpc"] == "Subscribe":
        requests = [text_format.Parse(expand(r), gnmi_pb2.SubscribeRequest()) for r in case["requests"]]
        list(stub.Subscribe(iter(requests), timeout=30))
    else:
        request_type = {"Get": gnmi_pb2.GetRequest, "Set": gnmi_pb2.SetRequest}[case["rpc"]]
        getattr(stub, case["rpc"])(text_format.Parse(expand(case["request"]), request_type()), timeout=30)


@pytest.mark.parametrize("case", cases("gnmi"))
def test_a_malformed_gnmi_request_gets_its_status_and_says_why(gnmi_host: DrivenHost, case: dict[str, Any]) -> None:
    options = [("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(gnmi_host.address, options=options) as channel, pytest.raises(grpc.RpcError) as e:
        gnmi_call(channel, case)
    assert e.value.code().name == case["code"], e.value.details()
    assert case["message"] in e.value.details(), e.value.details()


def test_the_host_refusing_them_still_serves_and_took_no_set(gnmi_host: DrivenHost) -> None:
    stub = gnmi_pb2_grpc.gNMIStub(gnmi_host.channel)
    reply = stub.Get(gnmi_pb2.GetRequest(prefix=gnmi_pb2.Path(target="leaf")), timeout=10)
    assert len(reply.notification[0].update) > 100
    gnmi_host.advance(100 * US)
    assert gnmi_host.alive() and "inputs" not in gnmi_host.results()


def root_stream(target: str, paths: int, interval_ns: int) -> gnmi_pb2.SubscribeRequest:
    """A STREAM subscription to the whole of ``target``, ``paths`` times over, sampled every ``interval_ns``."""
    return gnmi_pb2.SubscribeRequest(subscribe=gnmi_pb2.SubscriptionList(
        prefix=gnmi_pb2.Path(target=target), mode=gnmi_pb2.SubscriptionList.STREAM,
        subscription=[gnmi_pb2.Subscription(path=gnmi_pb2.Path(), sample_interval=interval_ns)] * paths))


def test_a_stream_subscriber_that_never_reads_is_dropped_and_the_run_goes_on() -> None:
    """Ten whole-switch paths sampled at every 1 us boundary, never read: before the limit the host
    grew by about 0.8 MB a window. Now the subscriber is dropped once MAX_QUEUED_LEAVES wait, the
    host's memory stays put and its results are those of a run without it."""
    plain, watched = DrivenHost(INCAST), DrivenHost(INCAST)
    try:
        for h in (plain, watched):
            h.start()
        before_mb = watched.rss_mb()
        with grpc.insecure_channel(watched.address) as channel:  # its own connection, as a client's
            stream = gnmi_pb2_grpc.gNMIStub(channel).Subscribe(iter([root_stream("leaf", 10, 1)]), timeout=120)
            assert next(stream).update.update  # subscribed: the initial state came
            for h in (plain, watched):
                h.run_to(1000 * US, 1 * US)  # a thousand windows, each a due sample of ten whole switches
            grown_mb = watched.rss_mb() - before_mb
            read = 0
            with pytest.raises(grpc.RpcError) as e:
                for _ in stream:
                    read += 1
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "(MAX_QUEUED_LEAVES)" in e.value.details()
        assert read > 0  # what gRPC had taken before: the samples queued since were freed
        assert grown_mb < 300, f"the host grew by {grown_mb} MB"
        assert watched.alive() and watched.results() == plain.results()
    finally:
        plain.close()
        watched.close()


def test_sets_waiting_for_a_window_boundary_are_bounded() -> None:
    """Before the run starts every Set waits for the first boundary: MAX_PENDING changes may, then
    the next Set is refused whole until the run takes them."""
    h = DrivenHost(INCAST)
    enabled = gnmi_pb2.Path(elem=[gnmi_pb2.PathElem(name=n) for n in ("qos", "pfc", "config", "enabled")])
    full = gnmi_pb2.SetRequest(prefix=gnmi_pb2.Path(target="leaf"), update=[gnmi_pb2.Update(
        path=enabled, val=gnmi_pb2.TypedValue(bool_val=True))] * MAX_PATHS)
    try:
        stub = gnmi_pb2_grpc.gNMIStub(h.channel)
        for _ in range(MAX_PENDING // MAX_PATHS):
            stub.Set(full, timeout=30)
        with pytest.raises(grpc.RpcError) as e:
            stub.Set(full, timeout=30)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "(MAX_PENDING)" in e.value.details()
        h.start()
        h.advance(10 * US)
        stub.Set(full, timeout=30)  # taken at that boundary: room again
        h.advance(20 * US)
        assert len(h.results()["inputs"]) == MAX_PENDING + MAX_PATHS
    finally:
        h.close()


class OpenSubscription:
    """A Subscribe stream held open (its request side too) until closed."""

    def __init__(self, channel: grpc.Channel, request: gnmi_pb2.SubscribeRequest) -> None:
        self.done = threading.Event()

        def requests() -> Iterator[gnmi_pb2.SubscribeRequest]:
            yield request
            self.done.wait()

        self.call = gnmi_pb2_grpc.gNMIStub(channel).Subscribe(requests(), timeout=60)

    def first(self) -> Any:
        return next(self.call)

    def close(self) -> None:
        self.done.set()
        self.call.cancel()


def test_a_host_serves_a_bounded_number_of_subscriptions_and_stream_samples() -> None:
    h = DrivenHost(INCAST)
    opened: list[OpenSubscription] = []

    def subscribe(request: gnmi_pb2.SubscribeRequest) -> OpenSubscription:
        opened.append(OpenSubscription(channel, request))
        return opened[-1]

    state = gnmi_pb2.Path(elem=[gnmi_pb2.PathElem(name=n) for n in ("system", "state")])
    try:
        h.start()
        with grpc.insecure_channel(h.address) as channel:
            switch = len(gnmi_pb2_grpc.gNMIStub(channel).Get(gnmi_pb2.GetRequest(
                prefix=gnmi_pb2.Path(target="leaf")), timeout=10).notification[0].update)
            # whole-switch STREAM paths up to MAX_LEAVES sampled leaves on the host, then ten more
            big = subscribe(root_stream("leaf", MAX_LEAVES // switch - 5, 0))
            assert big.first().update.update
            with pytest.raises(grpc.RpcError) as e:
                subscribe(root_stream("leaf", 10, 0)).first()
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"past {MAX_LEAVES} (MAX_LEAVES)" in e.value.details()
            for k in range(MAX_SUBSCRIPTIONS - 1):  # POLL and STREAM alike hold a place while open
                mode = (gnmi_pb2.SubscriptionList.POLL, gnmi_pb2.SubscriptionList.STREAM)[k % 2]
                assert subscribe(gnmi_pb2.SubscribeRequest(subscribe=gnmi_pb2.SubscriptionList(
                    prefix=gnmi_pb2.Path(target="rx"), mode=mode,
                    subscription=[gnmi_pb2.Subscription(path=state)]))).first().update.update
            with pytest.raises(grpc.RpcError) as e:
                subscribe(root_stream("rx", 1, 0)).first()
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"serves {MAX_SUBSCRIPTIONS} subscriptions" in e.value.details()
            big.close()  # its place and its samples are free again once the host hears of it
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert subscribe(root_stream("leaf", 10, 0)).first().update.update
                    break
                except grpc.RpcError as refused:
                    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
                    time.sleep(0.05)
            h.run_to(1000 * US, 100 * US)  # samples go to the open streams meanwhile
            assert h.alive()
    finally:
        for sub in opened:
            sub.close()
        h.close()


# -- control ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveRun:
    """`testbed run scenarios/testers.yaml` paced slowly, with the control service on loopback."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.address = f"127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen([*TESTBED, "run", "scenarios/testers.yaml", "--pace", "0.001", "--control",
                                      self.address, "--out", str(out), "--partition", "site", "--backend", "process",
                                      "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.channel = grpc.insecure_channel(self.address, options=[
            ("grpc.max_send_message_length", 64 << 20), ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 100)])
        self.stub = control_pb2_grpc.ControlStub(self.channel)
        deadline = time.monotonic() + 60
        while not self.stub.GetState(control_pb2.GetStateRequest(), wait_for_ready=True, timeout=60).running:
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.02)

    def finish(self) -> str:
        self.channel.close()
        output, _ = self.proc.communicate(timeout=120)
        return output


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    run = LiveRun(tmp_path_factory.mktemp("control") / "out")
    try:
        yield run
    finally:
        run.proc.kill()
        run.channel.close()


@pytest.mark.parametrize("case", cases("control"))
def test_a_malformed_fault_gets_its_status_and_says_why(live_run: LiveRun, case: dict[str, Any]) -> None:
    with pytest.raises(grpc.RpcError) as e:
        if "raw" in case:
            inject = live_run.channel.unary_unary("/testbed.control.v1.Control/InjectFault",
                                                  request_serializer=bytes, response_deserializer=bytes)
            inject(bytes.fromhex(case["raw"]), timeout=30)
        else:
            request = control_pb2.InjectFaultRequest(fault_json=expand(case["fault_json"]))
            live_run.stub.InjectFault(request, timeout=30)
    assert live_run.stub.GetState(control_pb2.GetStateRequest(), timeout=10).running, "too late to tell"
    assert e.value.code().name == case["code"], e.value.details()
    assert case["message"] in e.value.details(), e.value.details()


def test_the_run_refusing_them_ends_normally_with_no_fault_taken(live_run: LiveRun) -> None:
    output = live_run.finish()
    assert live_run.proc.returncode == 0, output
    inputs = live_run.out / "inputs.json"
    assert not inputs.exists() or json.loads(inputs.read_text()).get("faults", []) == []
