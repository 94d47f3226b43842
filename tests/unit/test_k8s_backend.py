"""The k8s backend's judgement of pods and of kubectl's port-forward line."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.backends.k8s import FORWARDING, pod_problem


def _pod(phase: str = "Running", restarts: int = 0, state: dict[str, Any] | None = None,
         last: dict[str, Any] | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "s-h-0"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = {"name": "host", "restartCount": restarts, "state": state or {"running": {}}, "lastState": last or {}}
    return {"metadata": meta, "status": {"phase": phase, "containerStatuses": [status]}}


@pytest.mark.parametrize(("pod", "problem"), [
    (_pod(), None),
    (_pod(phase="Pending"), "pod s-h-0 is Pending"),
    (_pod(deleting=True), "pod s-h-0 is being deleted"),
    (_pod(restarts=1), "pod s-h-0: container host restarted 1 times"),
    (_pod(state={"terminated": {"reason": "OOMKilled", "exitCode": 137}}),
     "pod s-h-0: container host terminated (OOMKilled, exit code 137), restarts 0"),
    (_pod(restarts=1, last={"terminated": {"reason": "Error", "exitCode": 1}}),
     "pod s-h-0: container host terminated (Error, exit code 1), restarts 1"),
])
def test_a_pod_that_stopped_restarted_or_goes_is_a_failed_host(pod: dict[str, Any], problem: str | None) -> None:
    assert pod_problem(pod) == problem


def test_the_forwarded_loopback_port_is_read_from_kubectls_line() -> None:
    match = FORWARDING.search("Forwarding from 127.0.0.1:43817 -> 50051\n")
    assert match is not None and match.group(1) == "43817"
    assert FORWARDING.search("Forwarding from [::1]:43817 -> 50051") is None
