"""The device host as a gRPC server: health, reflection, status codes for bad requests, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from testbed.sync.v1 import sync_pb2, sync_pb2_grpc

from emulators.model.scenario import scenario_to_dict
from orchestrator.scenario.loader import load_scenario

pytestmark = pytest.mark.integration


@pytest.fixture
def host():
    env = {k: v for k, v in os.environ.items() if k not in ("TESTBED_TOKEN", "TESTBED_RUN_TOKEN")}  # no token asked
    proc = subprocess.Popen([sys.executable, "-m", "services.host", "--name", "tester-a"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    assert line.startswith("LISTENING "), proc.stderr.read()
    channel = grpc.insecure_channel(line.split()[1])
    yield proc, channel
    channel.close()
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _load_request(host: str = "tester-a", **overrides):
    scenario = load_scenario("scenarios/testers.yaml")
    fields = {
        "run_id": "t", "host": host, "scenario_json": json.dumps(scenario_to_dict(scenario)),
        "assignment": {d.name: d.name for d in scenario.devices},
    }
    fields.update(overrides)
    return sync_pb2.LoadRequest(**fields)


def test_health_reports_serving_for_the_server_and_its_services(host):
    _, channel = host
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "testbed.sync.v1.HostControl", "testbed.sync.v1.FrameExchange"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(host):
    _, channel = host
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = {s.name for s in next(iter(replies)).list_services_response.service}
    assert {"testbed.sync.v1.HostControl", "testbed.sync.v1.FrameExchange", "grpc.health.v1.Health"} <= names


def test_requests_before_load_fail_with_failed_precondition(host):
    _, channel = host
    stub = sync_pb2_grpc.HostControlStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.Results(sync_pb2.ResultsRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not loaded" in e.value.details()


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"host": "tester-b"}, "not 'tester-b'"),
        ({"scenario_json": "{not json"}, "scenario_json"),
        ({"scenario_json": "{}"}, "scenario_json"),
        ({"assignment": {"tester-a": "tester-a"}}, "no host for devices"),
    ],
)
def test_bad_load_requests_are_invalid_argument(host, overrides, words):
    _, channel = host
    stub = sync_pb2_grpc.HostControlStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.Load(_load_request(**overrides), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in e.value.details()


def test_load_twice_is_failed_precondition_and_connect_needs_peer_addresses(host):
    _, channel = host
    stub = sync_pb2_grpc.HostControlStub(channel)
    loaded = stub.Load(_load_request(), timeout=5)
    assert list(loaded.devices) == ["tester-a"] and list(loaded.peers) == ["tester-a2", "tester-b"]
    with pytest.raises(grpc.RpcError) as e:
        stub.Load(_load_request(), timeout=5)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as e:
        stub.Connect(sync_pb2.ConnectRequest(peer_addresses={}), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "tester-a2" in e.value.details()


def test_sigterm_stops_the_host_gracefully(host):
    proc, channel = host
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    assert [entry["event"] for entry in logs][-1] == "stopped"
    assert all(entry["host"] == "tester-a" for entry in logs)
