"""The k8s backend against a stand-in kubectl: render, replace, apply, wait, port-forward, run, and a
pod that terminates failing the run by its host's name. The host is a real process on loopback."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends import k8s
from orchestrator.deploy import DeployOptions
from orchestrator.partition import plan_partition
from orchestrator.results import assemble, deterministic_view
from orchestrator.run import _run_cluster, run_scenario
from orchestrator.scenario.loader import parse_scenario
from tests.helpers import two_testers

pytestmark = pytest.mark.integration

FORWARD = (sys.executable, "-m", "tests.fake_port_forward")


class FakeKubectl:
    """Answers the backend's kubectl calls and records them; its pod terminates when told to."""

    def __init__(self, pod: str, terminated: bool = False) -> None:
        self.pod = pod
        self.terminated = terminated
        self.calls: list[tuple[str, ...]] = []

    async def __call__(self, *args: str, timeout_s: float = 300.0) -> str:
        self.calls.append(args)
        if args[:2] == ("get", "pods"):
            state = ({"terminated": {"reason": "Error", "exitCode": 1}} if self.terminated
                     else {"running": {}})
            return json.dumps({"items": [{"metadata": {"name": self.pod}, "status": {
                "phase": "Failed" if self.terminated else "Running",
                "containerStatuses": [{"name": "host", "restartCount": 0, "state": state}]}}]})
        if args[0] == "logs":
            return '{"event": "loaded"}\n{"event": "window failed"}\n'
        return ""


async def _run(fake: FakeKubectl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, Any]:
    monkeypatch.setenv("FAKE_SCENARIO", "t")
    scenario = parse_scenario(two_testers(flows="  - {name: f, src: ta/p0, dst: tb/p0, rate: 100G, count: 100}"),
                              "<test>")
    plan = plan_partition(scenario, "single")

    async def launch() -> Any:
        return await k8s.launch(scenario, plan, "run1", tmp_path / "hosts", 30.0, DeployOptions(namespace="lab"),
                                run_kubectl=fake, forward_command=FORWARD)

    outcome = await _run_cluster(launch, scenario, plan, None)
    return scenario, plan, outcome


def test_pods_are_replaced_applied_awaited_forwarded_and_run_like_a_process(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKubectl("t-all-0")
    scenario, plan, outcome = asyncio.run(_run(fake, tmp_path, monkeypatch))
    assert outcome.error is None
    results = assemble(scenario, plan, "k8s", outcome.host_results, windows=outcome.windows,
                       wall_seconds=outcome.wall_seconds, end_ps=outcome.end_ps)
    assert deterministic_view(results) == deterministic_view(run_scenario(scenario, "single"))
    selector = "aicn-testbed/scenario=t"
    manifests = tmp_path / "k8s"
    assert fake.calls[:4] == [
        ("apply", "-k", str(manifests / "shared")),
        ("delete", "statefulset", "-n", "lab", "-l", selector, "--ignore-not-found", "--cascade=foreground",
         "--wait=true"),
        ("apply", "-k", str(manifests)),
        ("wait", "--for=condition=Ready", "pod", "-n", "lab", "-l", selector, "--timeout=180s"),
    ]
    assert (manifests / "hosts" / "t-all" / "kustomization.yaml").is_file()
    assert ("logs", "-n", "lab", "t-all-0") in fake.calls  # saved as the host's log
    assert (tmp_path / "hosts" / "all.log").read_text().startswith('{"event": "loaded"}')


def test_a_terminated_pod_fails_the_run_naming_its_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKubectl("t-all-0", terminated=True)
    _, _, outcome = asyncio.run(_run(fake, tmp_path, monkeypatch))
    assert outcome.failed_host == "all"
    assert outcome.error == ("device host 'all' failed: pod t-all-0: container host terminated (Error, exit code 1), "
                             'restarts 0; last log lines: {"event": "loaded"} | {"event": "window failed"}')
    assert ("scale", "statefulset", "t-all", "-n", "lab", "--replicas=0") in fake.calls
