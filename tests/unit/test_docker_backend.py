"""The docker backend without an engine: the containers it would create, names, labels, lookups."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest

from orchestrator import cli
from orchestrator.backends import docker as backend
from orchestrator.deploy import HOST_PORT, DeployError, DeployOptions, containers, dns_label, host_names
from orchestrator.deploy.docker_engine import UnknownDevice, device_container, statuses
from orchestrator.partition import plan_partition
from orchestrator.scenario.loader import parse_scenario
from tests.helpers import two_testers


def _plan(partition: str = "device") -> Any:
    return plan_partition(parse_scenario(two_testers(), "<test>"), partition)


def test_host_network_gives_every_host_its_own_loopback_port_for_coordinator_and_peers() -> None:
    specs = backend.host_specs("t", _plan(), "run1", DeployOptions(docker_network="host"), {"ta": 40001, "tb": 40002})
    assert [s.host for s in specs] == ["ta", "tb"]
    ta = specs[0]
    assert ta.name == "testbed-t-ta" and ta.listen == ta.peer_address == "127.0.0.1:40001"
    kwargs = ta.run_kwargs
    assert kwargs["network_mode"] == "host" and "ports" not in kwargs and "network" not in kwargs
    assert kwargs["command"] == ["--name", "ta", "--listen", "127.0.0.1:40001", "--log-level", "info"]
    assert kwargs["healthcheck"]["test"] == ["CMD", "python", "-m", "orchestrator.deploy.probe", "127.0.0.1:40001"]
    assert kwargs["labels"] == {backend.LABEL_ROLE: "device-host", backend.LABEL_SCENARIO: "t",
                                backend.LABEL_HOST: "ta", backend.LABEL_DEVICES: "ta", backend.LABEL_RUN: "run1",
                                backend.LABEL_ADDRESS: "127.0.0.1:40001"}


def test_bridge_network_serves_on_the_fixed_port_publishes_it_on_loopback_and_peers_dial_by_name() -> None:
    specs = backend.host_specs("t", _plan(), "run1", DeployOptions())
    tb = specs[1]
    assert tb.listen == f"0.0.0.0:{HOST_PORT}" and tb.peer_address == f"testbed-t-tb:{HOST_PORT}"
    assert tb.run_kwargs["network"] == backend.network_name("t") == "testbed-t"
    assert tb.run_kwargs["ports"] == {f"{HOST_PORT}/tcp": ("127.0.0.1",)}  # a free port, on loopback only
    assert tb.run_kwargs["healthcheck"]["test"][-1] == f"127.0.0.1:{HOST_PORT}"
    assert backend.LABEL_ADDRESS not in tb.run_kwargs["labels"]


@pytest.mark.parametrize("network", ["bridge", "host"])
def test_containers_run_unprivileged_from_the_chosen_image(network: str) -> None:
    options = DeployOptions(image="registry.local:5000/testbed:7", docker_network=network)
    for spec in backend.host_specs("t", _plan("site"), "r", options, {"a": 1, "b": 2}):
        kwargs = spec.run_kwargs
        assert kwargs["image"] == "registry.local:5000/testbed:7"
        assert kwargs["user"] == "10001:10001" and kwargs["read_only"] is True
        assert kwargs["cap_drop"] == ["ALL"] and kwargs["security_opt"] == ["no-new-privileges"]
        assert "privileged" not in kwargs and kwargs["detach"] is True


def test_site_partition_labels_every_device_of_the_host() -> None:
    scenario = parse_scenario(two_testers().replace("site: b", "site: a"), "<test>")
    (spec,) = backend.host_specs("t", plan_partition(scenario, "site"), "r", DeployOptions())
    assert spec.host == "a" and spec.run_kwargs["labels"][backend.LABEL_DEVICES] == "ta,tb"


def test_an_unknown_network_mode_is_refused() -> None:
    with pytest.raises(DeployError, match="unknown docker network mode 'overlay'; choose one of bridge, host"):
        backend.host_specs("t", _plan(), "r", DeployOptions(docker_network="overlay"))


def test_names_are_dns_labels_unique_per_host() -> None:
    assert dns_label("Trial_A/a1 PP") == "trial-a-a1-pp"
    long = dns_label("x" * 80)
    assert len(long) <= 52 and long != dns_label("x" * 81)
    assert host_names("s", ["a", "b"], prefix="testbed-") == {"a": "testbed-s-a", "b": "testbed-s-b"}
    with pytest.raises(DeployError, match="hosts 'gw_1' and 'gw-1' both become 'testbed-s-gw-1'"):
        host_names("s", ["gw_1", "gw-1"], prefix="testbed-")


def test_free_loopback_ports_are_distinct() -> None:
    ports = backend.free_loopback_ports(20)
    assert len(set(ports)) == 20 and all(0 < p < 65536 for p in ports)


class FakeContainer:
    def __init__(self, name: str, scenario: str, host: str, devices: str, status: str = "running",
                 exit_code: int = 0, health: str = "healthy", log: bytes = b"") -> None:
        self.name = name
        self.labels = {backend.LABEL_ROLE: backend.ROLE_HOST, backend.LABEL_SCENARIO: scenario,
                       backend.LABEL_HOST: host, backend.LABEL_DEVICES: devices,
                       backend.LABEL_ADDRESS: "127.0.0.1:4000"}
        self.status = status
        self.attrs = {"State": {"Status": status, "ExitCode": exit_code, "OOMKilled": False,
                                "Health": {"Status": health}},
                      "NetworkSettings": {"Ports": {}}}
        self._log = log

    def reload(self) -> None:
        pass

    def logs(self, **kwargs: Any) -> bytes:
        return self._log


class FakeNetwork:
    def __init__(self, scenario: str) -> None:
        self.name = backend.network_name(scenario)
        self.labels = {backend.LABEL_ROLE: backend.ROLE_NETWORK, backend.LABEL_SCENARIO: scenario}


class FakeClient:
    """The engine's containers and networks, listed by label as the engine filters them; removable."""

    def __init__(self, containers: list[FakeContainer], networks: list[FakeNetwork] | None = None) -> None:
        self._all = containers
        self._networks = networks or []
        self.containers = SimpleNamespace(list=lambda **kw: self._matching(self._all, kw["filters"]["label"]))
        self.networks = SimpleNamespace(list=lambda **kw: self._matching(self._networks, kw["filters"]["label"]))
        for c in containers:
            c.remove = lambda force=False, c=c: self._all.remove(c)  # type: ignore[attr-defined]
        for n in self._networks:
            n.remove = lambda n=n: self._networks.remove(n)  # type: ignore[attr-defined]

    @staticmethod
    def _matching(objects: list[Any], labels: list[str]) -> list[Any]:
        def fits(c: Any) -> bool:
            for label in labels:
                key, _, value = label.partition("=")
                if key not in c.labels or (value and c.labels[key] != value):
                    return False
            return True

        return [c for c in objects if fits(c)]


def test_a_device_is_found_by_name_or_host_and_ambiguity_asks_for_the_scenario() -> None:
    client = FakeClient([FakeContainer("testbed-a-dc1", "a", "dc1", "dc1-s0,dc1-leaf0"),
                         FakeContainer("testbed-b-dc1-s0", "b", "dc1-s0", "dc1-s0")])
    assert device_container(client, "dc1-leaf0").name == "testbed-a-dc1"
    assert device_container(client, "dc1").name == "testbed-a-dc1"
    assert device_container(client, "dc1-s0", scenario="b").name == "testbed-b-dc1-s0"
    with pytest.raises(UnknownDevice, match=r"runs in several scenarios \(a, b\); pick one with --scenario"):
        device_container(client, "dc1-s0")
    with pytest.raises(UnknownDevice, match="hosts device 'nope'; devices: dc1-leaf0, dc1-s0$"):
        device_container(client, "nope")
    with pytest.raises(UnknownDevice, match="no testbed container is there"):
        device_container(FakeClient([]), "dc1")


def test_status_lists_state_health_and_address_by_scenario_and_host() -> None:
    client = FakeClient([FakeContainer("testbed-b-x", "b", "x", "x", status="exited", exit_code=137),
                         FakeContainer("testbed-a-y", "a", "y", "y,z")])
    rows = statuses(client)
    assert [(r.scenario, r.host, r.devices, r.state, r.health, r.address) for r in rows] == [
        ("a", "y", ("y", "z"), "running", "healthy", "127.0.0.1:4000"),
        ("b", "x", ("x",), "exited", "-", "-"),
    ]


def test_a_killed_container_is_described_with_its_signal_and_last_log_lines() -> None:
    container = FakeContainer("testbed-t-ta", "t", "ta", "ta", status="exited", exit_code=137,
                              log=b'{"event": "serving"}\n{"event": "loaded"}\n')
    assert backend.describe_exit(container) == ('container testbed-t-ta exited with code 137 (SIGKILL); '
                                                'last log lines: {"event": "serving"} | {"event": "loaded"}')

    class Removed(FakeContainer):
        def reload(self) -> None:
            raise docker.errors.NotFound("gone")

    assert backend.describe_exit(Removed("testbed-t-tb", "t", "tb", "tb")) == "container testbed-t-tb was removed"


@pytest.mark.parametrize(("flags", "message"), [
    (["--docker-network", "host"], "--docker-network applies to --backend docker only"),
    (["--image", "x:1"], "--image applies to --backend docker or k8s only"),
    (["--backend", "docker", "--namespace", "n"], "--namespace and --overlay apply to --backend k8s only"),
])
def test_deployment_flags_for_another_backend_are_bad_input(flags: list[str], message: str,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)  # keep structlog on the real stderr
    assert cli.main(["run", "scenarios/testers.yaml", *flags]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"


def test_the_management_token_reaches_the_containers_when_one_is_set(monkeypatch) -> None:
    monkeypatch.delenv("TESTBED_TOKEN", raising=False)
    assert "environment" not in backend.host_specs("t", _plan(), "r", DeployOptions())[0].run_kwargs
    monkeypatch.setenv("TESTBED_TOKEN", "s3cret")
    for spec in backend.host_specs("t", _plan(), "r", DeployOptions()):
        assert spec.run_kwargs["environment"] == {"TESTBED_TOKEN": "s3cret"}


def _engine_of_two_users() -> FakeClient:
    """Scenario "mine" started from this checkout, "theirs" by someone else on the same engine."""
    return FakeClient([FakeContainer("testbed-mine-a", "mine", "a", "a"),
                       FakeContainer("testbed-mine-b", "mine", "b", "b"),
                       FakeContainer("testbed-theirs-a", "theirs", "a", "a")],
                      [FakeNetwork("mine"), FakeNetwork("theirs")])


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "out" / ".docker-scenarios"
    monkeypatch.setattr(containers, "RECORD", path)
    return path


def _left(client: FakeClient) -> list[str]:
    return sorted(c.name for c in client._all) + sorted(n.name for n in client._networks)


def test_down_removes_the_scenarios_this_checkout_ran_and_leaves_another_users(record: Path) -> None:
    client = _engine_of_two_users()
    containers.record_scenarios(["mine"])
    containers.record_scenarios(["mine"])  # run twice: noted once
    assert record.read_text() == "mine\n"
    assert containers.down(client) == "removed 2 containers and 1 network of scenario mine"
    assert _left(client) == ["testbed-theirs-a", "testbed-theirs"]
    assert not record.exists()
    # safe to run twice: nothing of this checkout is left, and the other scenario is named, not removed
    assert containers.down(client) == (
        "nothing to remove: no scenario run from this checkout with --backend docker since the last `testbed down`; "
        "1 other scenario on the engine: `testbed down --scenario NAME` (`testbed status` lists them) or `--all`")
    assert _left(client) == ["testbed-theirs-a", "testbed-theirs"]


def test_down_by_name_removes_that_scenario_only_and_all_removes_everything(record: Path) -> None:
    client = _engine_of_two_users()
    containers.record_scenarios(["mine", "other"])
    assert containers.down(client, scenario="theirs") == "removed 1 container and 1 network of scenario theirs"
    assert _left(client) == ["testbed-mine-a", "testbed-mine-b", "testbed-mine"]
    assert containers.down(client, scenario="mine") == "removed 2 containers and 1 network of scenario mine"
    assert record.read_text() == "other\n"  # no longer noted once removed
    client = _engine_of_two_users()
    assert containers.down(client, everything=True) == "removed 3 containers and 2 networks (every testbed container)"
    assert _left(client) == [] and not record.exists()


def test_down_through_the_command_line(record: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)
    client = _engine_of_two_users()
    client.close = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setattr(containers, "engine", lambda: client)
    containers.record_scenarios(["mine"])
    assert cli.main(["down"]) == 0
    assert capsys.readouterr().out == "removed 2 containers and 1 network of scenario mine\n"
    assert cli.main(["down", "--scenario", "x", "--all"]) == 2
    assert capsys.readouterr().err.startswith("error: --all: not allowed with argument --scenario")
    assert cli.main(["down"]) == 0  # nothing noted any more: says what to pass, removes nothing
    assert capsys.readouterr().out.startswith("nothing to remove: no scenario run from this checkout")
    assert _left(client) == ["testbed-theirs-a", "testbed-theirs"]

    def refuse(force: bool = False) -> None:
        raise docker.errors.APIError("removal of container testbed-theirs-a is already in progress")

    client._all[0].remove = refuse  # type: ignore[attr-defined]
    assert cli.main(["down", "--all"]) == 1
    assert capsys.readouterr().err == ("error: the Docker engine: removal of container testbed-theirs-a is already "
                                       "in progress\n")


def test_a_docker_run_is_noted_before_it_starts(record: Path, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise DeployError("no Docker engine answers (test)")

    monkeypatch.setattr(cli, "run_scenario", refuse)
    assert cli.main(["run", "scenarios/testers.yaml", "--backend", "docker", "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err == "error: no Docker engine answers (test)\n"
    assert containers.recorded_scenarios() == ["testers"]
