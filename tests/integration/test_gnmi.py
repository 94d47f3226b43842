"""gNMI on a device host, spoken to by a stock client (pygnmi) while the test drives the windows."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pygnmi.client import gNMIclient
from pygnmi.spec.v080 import gnmi_pb2, gnmi_pb2_grpc

from orchestrator.run import run_scenario
from orchestrator.scenario.loader import load_scenario
from tests.helpers import run_cli, run_text
from tests.integration.gnmi_host import DrivenHost
from tests.unit.test_gnmi_paths import INCAST

pytestmark = pytest.mark.integration

US = 1_000_000  # ps
KIB = 1024


@pytest.fixture
def host() -> Iterator[DrivenHost]:
    h = DrivenHost(INCAST)
    yield h
    h.close()


def client(h: DrivenHost) -> gNMIclient:
    return gNMIclient(target=("127.0.0.1", h.port), insecure=True, gnmi_timeout=5)


def leaf_values(reply: dict) -> dict[str, object]:
    """pygnmi's Get reply as {path: value}."""
    return {u["path"]: u["val"] for n in reply["notification"] for u in n.get("update", [])}


def marked(h: DrivenHost) -> int:
    return h.results()["devices"]["leaf"]["counters"]["ecn_marked_frames"]


def test_capabilities_and_get_read_counters_in_virtual_time(host: DrivenHost) -> None:
    host.start()
    host.run_to(300 * US, 50 * US)
    with client(host) as gc:
        caps = gc.capabilities()
        assert caps["gnmi_version"] == "0.8.0"
        assert {"json", "json_ietf", "proto"} <= set(caps["supported_encodings"])
        reply = gc.get(target="rx", path=["/interfaces/interface[name=p0]/state/counters"], encoding="json")
        values = leaf_values(reply)
        rx = host.results()["devices"]["rx"]["ports"]["p0"]
        assert values["interfaces/interface[name=p0]/state/counters/in-octets"] == rx["rx_bytes"] > 0
        assert reply["notification"][0]["timestamp"] == 300_000  # ns of virtual time: the window boundary
        ecn = leaf_values(gc.get(target="leaf", path=["/qos/ecn/config"], encoding="json_ietf"))
        assert ecn["qos/ecn/config/kmin-bytes"] == 128 * KIB


def test_set_of_ecn_thresholds_changes_marking(host: DrivenHost) -> None:
    """The same incast three times: as scenario'd, with thresholds above any queue from the start,
    and with them raised halfway: no marks, then fewer marks than without the Set."""
    host.start()
    host.run_to(1000 * US, 100 * US)
    baseline = marked(host)
    assert baseline > 0

    raised = DrivenHost(INCAST)
    halfway = DrivenHost(INCAST)
    try:
        with client(raised) as gc:
            gc.set(target="leaf", update=[("/qos/ecn/config", {"kmin-bytes": 32 << 20, "kmax-bytes": 48 << 20})])
        raised.start()
        raised.run_to(1000 * US, 100 * US)
        assert marked(raised) == 0

        halfway.start()
        halfway.run_to(150 * US, 50 * US)
        early = marked(halfway)
        with client(halfway) as gc:
            gc.set(target="leaf", replace=[("/qos/ecn/config/kmin-bytes", 32 << 20),
                                           ("/qos/ecn/config/kmax-bytes", 48 << 20)])
        halfway.run_to(1000 * US, 100 * US)
        results = halfway.results()
        assert 0 < early == results["devices"]["leaf"]["counters"]["ecn_marked_frames"] < baseline
        assert results["inputs"] == [{
            "seq": 0, "at_ps": 150 * US, "window": 4, "kind": "gnmi-set", "device": "leaf",
            "path": "/qos/ecn/config", "value": {"enabled": True, "kmin-bytes": 32 << 20, "kmax-bytes": 48 << 20,
                                                 "pmax": 0.1}, "index": 1 << 40}]
    finally:
        raised.close()
        halfway.close()


# pygnmi's reader thread reports the stream's cancellation when the client closes it
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_subscribe_stream_samples_at_virtual_intervals(host: DrivenHost) -> None:
    host.start()
    host.advance(50 * US)  # pygnmi cannot parse a notification whose timestamp is 0
    with client(host) as gc:
        stream = gc.subscribe2(target="rx", subscribe={
            "mode": "stream", "encoding": "json",
            "subscription": [{"path": "/interfaces/interface[name=p0]/state/counters/in-octets",
                              "mode": "sample", "sample_interval": 100_000}]})  # 100 us of virtual time
        first = stream.get_update(timeout=5)  # the initial state, then sync_response
        assert first["update"]["timestamp"] == 50_000
        host.run_to(400 * US, 50 * US)
        samples = [stream.get_update(timeout=5)["update"] for _ in range(4)]
        stream.close()
    assert [s["timestamp"] for s in samples] == [100_000, 200_000, 300_000, 400_000]
    octets = [s["update"][0]["val"] for s in samples]
    assert octets == sorted(octets) and octets[-1] > octets[0]


def test_subscribe_once_and_poll_end_with_sync_response(host: DrivenHost) -> None:
    host.start()
    stub = gnmi_pb2_grpc.gNMIStub(host.channel)
    path = gnmi_pb2.Path(elem=[gnmi_pb2.PathElem(name="qos"), gnmi_pb2.PathElem(name="pfc")])
    subscribe = gnmi_pb2.SubscriptionList(prefix=gnmi_pb2.Path(target="leaf"), mode=gnmi_pb2.SubscriptionList.ONCE,
                                          subscription=[gnmi_pb2.Subscription(path=path)])
    replies = list(stub.Subscribe(iter([gnmi_pb2.SubscribeRequest(subscribe=subscribe)]), timeout=5))
    assert replies[-1].sync_response and replies[0].update.update

    subscribe.mode = gnmi_pb2.SubscriptionList.POLL
    requests = [gnmi_pb2.SubscribeRequest(subscribe=subscribe), gnmi_pb2.SubscribeRequest(poll=gnmi_pb2.Poll())]
    replies = list(stub.Subscribe(iter(requests), timeout=5))
    assert [r.sync_response for r in replies] == [False, True, False, True]


@pytest.mark.parametrize(("request_fields", "code", "words"), [
    ({"prefix": gnmi_pb2.Path(target="nope")}, grpc.StatusCode.NOT_FOUND, "no device 'nope'"),
    ({}, grpc.StatusCode.INVALID_ARGUMENT, "set prefix.target"),
    ({"prefix": gnmi_pb2.Path(target="leaf"), "path": [gnmi_pb2.Path(elem=[gnmi_pb2.PathElem(name="nowhere")])]},
     grpc.StatusCode.NOT_FOUND, "nothing at /nowhere"),
    ({"prefix": gnmi_pb2.Path(target="leaf"), "path": [gnmi_pb2.Path(elem=[gnmi_pb2.PathElem(name="")])]},
     grpc.StatusCode.INVALID_ARGUMENT, "malformed"),
    ({"prefix": gnmi_pb2.Path(target="leaf"), "encoding": gnmi_pb2.ASCII},
     grpc.StatusCode.INVALID_ARGUMENT, "encoding"),
])
def test_get_errors(host: DrivenHost, request_fields: dict, code: grpc.StatusCode, words: str) -> None:
    stub = gnmi_pb2_grpc.gNMIStub(host.channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.Get(gnmi_pb2.GetRequest(**request_fields), timeout=5)
    assert e.value.code() == code and words in e.value.details()


def test_set_errors_change_nothing(host: DrivenHost) -> None:
    stub = gnmi_pb2_grpc.gNMIStub(host.channel)
    kmin = gnmi_pb2.Path(elem=[gnmi_pb2.PathElem(name=n) for n in ("qos", "ecn", "config", "kmin-bytes")])
    cases = [
        (gnmi_pb2.TypedValue(string_val="big"), grpc.StatusCode.INVALID_ARGUMENT, "unsigned integer"),
        (gnmi_pb2.TypedValue(json_val=b"{oops"), grpc.StatusCode.INVALID_ARGUMENT, "is not JSON"),
        (gnmi_pb2.TypedValue(uint_val=1 << 50), grpc.StatusCode.INVALID_ARGUMENT, "between"),
        (gnmi_pb2.TypedValue(bytes_val=b"x"), grpc.StatusCode.INVALID_ARGUMENT, "not accepted"),
    ]
    for val, code, words in cases:
        ok = gnmi_pb2.Update(path=kmin, val=gnmi_pb2.TypedValue(uint_val=64 * KIB))
        request = gnmi_pb2.SetRequest(prefix=gnmi_pb2.Path(target="leaf"),
                                      update=[ok, gnmi_pb2.Update(path=kmin, val=val)])
        with pytest.raises(grpc.RpcError) as e:
            stub.Set(request, timeout=5)
        assert e.value.code() == code and words in e.value.details(), e.value.details()
    host.start()
    host.advance(10 * US)
    assert "inputs" not in host.results()  # a refused Set is refused whole


def test_a_token_is_required_when_configured() -> None:
    h = DrivenHost(INCAST, token="s3cret")
    try:
        stub = gnmi_pb2_grpc.gNMIStub(h.channel)
        request = gnmi_pb2.GetRequest(prefix=gnmi_pb2.Path(target="leaf"))
        for metadata in ([], [("authorization", "Bearer wrong")], [("authorization", "s3cret")]):
            with pytest.raises(grpc.RpcError) as e:
                stub.Get(request, metadata=metadata, timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(Exception, match="requires metadata 'authorization: Bearer <token>'"):  # nor pygnmi
            client(h).connect()
        assert stub.Get(request, metadata=[("authorization", "Bearer s3cret")], timeout=5).notification
        health = health_pb2_grpc.HealthStub(h.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes need no token
    finally:
        h.close()


def set_between_windows(run_dir: Path, device: str, from_ps: int,
                        update: tuple[str, object]) -> tuple[Callable[[int], None], list[int]]:
    """A progress callback for a run with one process per device, writing to ``run_dir``: between the
    first two windows past ``from_ps`` it finds ``device``'s host in its log and sends it ``update``
    with pygnmi (its only device: no target). The list gets the boundary it did that at."""
    done: list[int] = []

    def set_once(end_ps: int) -> None:
        if done or end_ps < from_ps:
            return
        line = next(json.loads(x) for x in (run_dir / "hosts" / f"{device}.log").read_text().splitlines()
                    if '"serving"' in x)
        host, port = line["address"].rsplit(":", 1)
        with gNMIclient(target=(host, int(port)), insecure=True, gnmi_timeout=5) as gc:
            gc.set(update=[update])
        done.append(end_ps)

    return set_once, done


def test_a_set_during_a_process_backend_run_takes_effect_and_is_recorded(tmp_path) -> None:
    """A real run (one process per device): the coordinator's progress callback, between two
    windows, finds the leaf's host from its log and raises the ECN thresholds with pygnmi."""
    text = INCAST.replace("length: 10m", "length: 1km")  # 4.9 us windows: about a hundred of them
    baseline = run_text(text)["devices"]["leaf"]["counters"]["ecn_marked_frames"]
    set_once, done = set_between_windows(tmp_path, "leaf", 150 * US,
                                         ("/qos/ecn/config", {"kmin-bytes": 32 << 20, "kmax-bytes": 48 << 20}))

    scenario_file = tmp_path / "incast.yaml"
    scenario_file.write_text(text)
    results = run_scenario(load_scenario(scenario_file), "device", "process", tmp_path, progress=set_once)
    assert done
    assert 0 < results["devices"]["leaf"]["counters"]["ecn_marked_frames"] < baseline
    [applied] = json.loads((tmp_path / "inputs.json").read_text())["gnmi_sets"]
    assert applied["host"] == applied["device"] == "leaf" and applied["path"] == "/qos/ecn/config"
    # in force where the next window starts: the boundary reached when the Set arrived, or later if
    # that window skipped an idle stretch (nothing may act before a window's start)
    assert done[0] <= applied["at_ps"] < done[0] + 5_000_000
    # the recorded run, replayed with the Set back on the timeline, gives the same results.json
    replay = run_cli("replay", str(tmp_path))
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "replay identical" in replay.stdout and "1 gNMI Sets" in replay.stdout


def test_a_rate_set_on_a_link_between_hosts_changes_both_sides_at_once(tmp_path) -> None:
    """One process per tester, a 100G flow each way over one link: pygnmi slows the link to 40G at
    ta's end only. Both sides run at 40G from the end of the window the Set went into (the other
    host may be in that window already), and replay reproduces it."""
    from tests.helpers import two_testers

    flows = "".join(f"  - {{name: {a}{b}, src: {a}/p0, dst: {b}/p0, rate: 100G, frame: 64KiB, for: 4ms}}\n"
                    for a, b in (("ta", "tb"), ("tb", "ta")))
    text = two_testers(rate="100G", length="20km", duration="4ms", flows=flows)  # 98 us windows
    set_once, done = set_between_windows(tmp_path, "ta", 1_000 * US,
                                         ("/interfaces/interface[name=p0]/config/high-speed", 40_000))

    scenario_file = tmp_path / "two.yaml"
    scenario_file.write_text(text)
    results = run_scenario(load_scenario(scenario_file), "device", "process", tmp_path, progress=set_once)
    [applied] = json.loads((tmp_path / "inputs.json").read_text())["gnmi_sets"]
    assert (applied["device"], applied["link"], applied["rate_bps"]) == ("ta", "l", 40 * 10**9)
    at_ps = applied["at_ps"]
    assert done[0] < at_ps <= done[0] + 2 * 98_000_000  # the end of the window after the Set came
    frame = 64 * KIB
    expected = (100e9 * at_ps + 40e9 * (4_000 * US - at_ps)) / 8e12  # bytes each side sent
    for device in ("ta", "tb"):
        sent = results["devices"][device]["ports"]["p0"]["tx_bytes"]
        assert abs(sent - expected) <= 2 * frame, (device, sent, expected)
    replay = run_cli("replay", str(tmp_path))
    assert replay.returncode == 0, replay.stdout + replay.stderr


def test_the_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch) -> None:
    from services.host import read_token

    monkeypatch.delenv("TESTBED_TOKEN", raising=False)
    assert read_token(None) is None
    monkeypatch.setenv("TESTBED_TOKEN", "from-env")
    assert read_token(None) == "from-env"
    (tmp_path / "token").write_text("from-file\n")
    assert read_token(str(tmp_path / "token")) == "from-file"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token(str(tmp_path / "empty"))


# pygnmi's reader thread raises CANCELLED when its channel closes after the stream: the client's, not ours
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_pygnmi_gets_and_streams_from_a_paced_process_backend_run(tmp_path) -> None:
    """The way a person or a controller watches a live run: `testbed run --pace` with one process per
    host; pygnmi finds the receiving tester's host in its log, reads it and streams a counter."""
    import subprocess
    import time

    from tests.helpers import TESTBED, two_testers

    scenario = tmp_path / "watch.yaml"
    scenario.write_text(two_testers(duration="4ms", flows="  - {name: f, src: ta/p0, dst: tb/p0, rate: 100G, "
                                                          "frame: 64KiB, for: 4ms}"))
    run = subprocess.Popen([*TESTBED, "run", str(scenario), "--pace", "0.001", "--partition", "device",
                            "--backend", "process", "--out", str(tmp_path / "out"), "--no-progress"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log = tmp_path / "out" / "hosts" / "tb.log"
        deadline = time.monotonic() + 60
        line = None
        while line is None and time.monotonic() < deadline:
            if log.exists():
                line = next((json.loads(x) for x in log.read_text().splitlines() if '"serving"' in x), None)
            time.sleep(0.05)
        assert line is not None, "the host never said where it serves"
        host, port = line["address"].rsplit(":", 1)
        with gNMIclient(target=(host, int(port)), insecure=True, gnmi_timeout=10) as gc:
            while True:  # until the scenario is loaded and a window has passed (a timestamp above 0)
                try:
                    got = gc.get(path=["/system/state/current-time-ps"])
                    if got["notification"][0]["timestamp"] > 0:
                        break
                except Exception:
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.05)
            stream = gc.subscribe2(subscribe={
                "mode": "stream", "encoding": "json",
                "subscription": [{"path": "/interfaces/interface[name=p0]/state/counters/in-octets",
                                  "mode": "sample", "sample_interval": 500_000}]})  # 0.5 ms of virtual time
            samples = [stream.get_update(timeout=30)["update"] for _ in range(4)]
            stream.close()
        output, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 0, output
    stamps = [s["timestamp"] for s in samples]
    assert stamps == sorted(stamps) and len(set(stamps)) == 4 and stamps[-1] <= 4_000_000  # virtual ns
    octets = [s["update"][0]["val"] for s in samples]
    assert octets == sorted(octets) and octets[-1] > octets[0]  # the flow arriving while we watch
