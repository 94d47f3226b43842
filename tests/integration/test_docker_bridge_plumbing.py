"""The docker backend's bridge mode against a stand-in engine: the network is made and labelled, the
coordinator finds each host at the port the engine published, and the run's results are the usual
ones. The stand-in "container" is a real host process on loopback (no traffic leaves 127.0.0.1);
its published port is the one it serves on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.backends import docker as backend
from orchestrator.deploy import HOST_PORT, DeployOptions
from orchestrator.partition import plan_partition
from orchestrator.results import assemble, deterministic_view
from orchestrator.run import _run_cluster, run_scenario
from orchestrator.scenario.loader import parse_scenario
from tests.helpers import two_testers

pytestmark = pytest.mark.integration


class HostProcessContainer:
    """A "container": services.host on 127.0.0.1, its port reported as published for HOST_PORT."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.name = kwargs["name"]
        self.labels = kwargs["labels"]
        self.kwargs = kwargs
        host = kwargs["command"][1]
        self.proc = subprocess.Popen([sys.executable, "-m", "services.host", "--name", host, "--listen",
                                      "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, **kwargs.get("environment", {})})  # the run's token
        assert self.proc.stdout is not None
        self.port = self.proc.stdout.readline().split(":")[-1].strip()

    @property
    def status(self) -> str:
        return "running" if self.proc.poll() is None else "exited"

    @property
    def attrs(self) -> dict[str, Any]:
        return {"State": {"Status": self.status, "ExitCode": 137 if self.status == "exited" else 0},
                "NetworkSettings": {"Ports": {f"{HOST_PORT}/tcp": [{"HostIp": "127.0.0.1", "HostPort": self.port}]}}}

    def reload(self) -> None:
        pass

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def remove(self, force: bool = False) -> None:
        if self.proc.poll() is None:
            self.kill()

    def logs(self, **kwargs: Any) -> bytes:
        return b'{"event": "serving"}\n'


class FakeEngine:
    def __init__(self) -> None:
        self.started: list[HostProcessContainer] = []
        self.networks_made: list[tuple[str, dict[str, Any]]] = []
        self.images = SimpleNamespace(get=lambda image: image)
        self.networks = SimpleNamespace(create=self._create_network, list=lambda **kw: [])
        self.containers = SimpleNamespace(run=self._run, list=lambda **kw: [])
        self.api = SimpleNamespace(containers=self._listed)

    def _create_network(self, name: str, **kwargs: Any) -> None:
        self.networks_made.append((name, kwargs))

    def _run(self, **kwargs: Any) -> HostProcessContainer:
        container = HostProcessContainer(kwargs)
        self.started.append(container)
        return container

    def _listed(self, **kwargs: Any) -> list[dict[str, Any]]:
        return [{"Names": ["/" + c.name], "State": c.status} for c in self.started]

    def close(self) -> None:
        for c in self.started:
            c.remove(force=True)


def test_bridge_mode_creates_the_network_and_reaches_hosts_at_their_published_ports(tmp_path: Path) -> None:
    scenario = parse_scenario(two_testers(flows="  - {name: f, src: ta/p0, dst: tb/p0, rate: 100G, count: 100}"),
                              "<test>")
    plan = plan_partition(scenario, "single")
    engine = FakeEngine()

    async def launch() -> Any:
        return await backend.launch(scenario, plan, "run1", tmp_path / "hosts", 30.0, DeployOptions(),
                                    connect=lambda: engine)

    try:
        outcome = asyncio.run(_run_cluster(launch, scenario, plan, None))
    finally:
        engine.close()
    assert outcome.error is None
    results = assemble(scenario, plan, "docker", outcome.host_results, windows=outcome.windows,
                       wall_seconds=outcome.wall_seconds, end_ps=outcome.end_ps)
    assert deterministic_view(results) == deterministic_view(run_scenario(scenario, "single"))
    assert engine.networks_made == [("testbed-t", {"driver": "bridge", "labels": {
        backend.LABEL_ROLE: backend.ROLE_NETWORK, backend.LABEL_SCENARIO: "t"}})]
    (container,) = engine.started
    assert container.kwargs["network"] == "testbed-t" and container.name == "testbed-t-all"
    assert (tmp_path / "hosts" / "all.log").read_text() == '{"event": "serving"}\n'


def test_a_container_that_exits_before_serving_fails_the_launch_naming_its_host(tmp_path: Path) -> None:
    scenario = parse_scenario(two_testers(), "<test>")
    plan = plan_partition(scenario, "single")
    engine = FakeEngine()
    real_run = engine._run

    def run_and_die(**kwargs: Any) -> HostProcessContainer:
        container = real_run(**kwargs)
        container.kill()
        return container

    engine.containers.run = run_and_die
    with pytest.raises(backend.HostFailed) as failed:
        asyncio.run(backend.launch(scenario, plan, "run1", tmp_path, 30.0, DeployOptions(), connect=lambda: engine))
    engine.close()
    assert failed.value.host == "all"
    assert "container testbed-t-all exited with code 137 (SIGKILL)" in str(failed.value)
