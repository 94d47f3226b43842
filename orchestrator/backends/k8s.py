"""The k8s backend: one single-pod StatefulSet per device host, applied with kubectl.

``launch`` renders the scenario's manifests into ``<out>/k8s`` (orchestrator.deploy.k8s_render),
replaces the scenario's earlier StatefulSets (a host serves one run), applies the manifests, waits
until every pod is Ready (its readiness probe is grpc.health.v1), forwards a loopback port to each
pod (``kubectl port-forward``) for the coordinator, and loads and connects the hosts; they dial each
other by their pods' DNS names under the headless Service. A pod that stops running, restarts or
loses its port-forward fails the run naming its host.

The pods stay after the run, like the docker backend's containers: ``kubectl delete -k <out>/k8s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from emulators.model.scenario import Scenario
from orchestrator.backends.remote import RemoteHost, explain, load_and_connect, stopped_on, wait_until_serving
from orchestrator.coordinator import HostFailed, gather_all
from orchestrator.deploy import HOST_PORT, DeployError, DeployOptions, dns_label
from orchestrator.deploy.k8s_render import LABEL_SCENARIO, SHARED, pod_addresses, render, statefulset_names
from orchestrator.partition import Plan
from services.host import TOKEN_ENV

log = structlog.get_logger("k8s-backend")

READY_TIMEOUT_S = 180
FORWARD_TIMEOUT_S = 30.0
SERVING_TIMEOUT_S = 30.0
POLL_S = 1.0
FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) -> " + str(HOST_PORT))

# kubectl ARGS... -> its stdout; raises DeployError when kubectl fails
Kubectl = Callable[..., Awaitable[str]]


async def kubectl(*args: str, timeout_s: float = 300.0) -> str:
    """Run ``kubectl ARGS``; DeployError with kubectl's own message when it fails."""
    if shutil.which("kubectl") is None:
        raise DeployError("kubectl is not installed; install it (and a cluster: see README, Kubernetes with kind)")
    proc = await asyncio.create_subprocess_exec("kubectl", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DeployError(f"kubectl {' '.join(args)}: no answer within {timeout_s:g} s") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in err.decode(errors="replace").splitlines() if line.strip()]
        message = lines[-1] if lines else f"exit code {proc.returncode}"  # kubectl's summary comes last
        raise DeployError(f"kubectl {args[0]}: {message} (is the cluster up and kubectl's context set to it?)")
    return out.decode(errors="replace")


def pod_problem(pod: dict[str, Any]) -> str | None:
    """Why a host's pod can no longer serve the run (None while it runs, never restarted)."""
    status = pod.get("status", {})
    name = pod.get("metadata", {}).get("name", "?")
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return f"pod {name} is being deleted"
    phase = status.get("phase", "Unknown")
    for container in status.get("containerStatuses", []):
        terminated = container.get("state", {}).get("terminated") or container.get("lastState", {}).get("terminated")
        if terminated:
            return (f"pod {name}: container {container['name']} terminated ({terminated.get('reason', '?')}, "
                    f"exit code {terminated.get('exitCode', '?')}), restarts {container.get('restartCount', 0)}")
        if container.get("restartCount", 0) > 0:
            return f"pod {name}: container {container['name']} restarted {container['restartCount']} times"
    if phase != "Running":
        return f"pod {name} is {phase}"
    return None


class PodHost(RemoteHost):
    """A host in its pod, reached through a ``kubectl port-forward`` child process."""

    def __init__(self, name: str, pod: str, window_timeout_s: float) -> None:
        super().__init__(name, window_timeout_s)
        self.pod = pod
        self.forward: asyncio.subprocess.Process | None = None


class K8sCluster:
    def __init__(self, hosts: list[PodHost], namespace: str, scenario: str, log_dir: Path,
                 run_kubectl: Kubectl = kubectl) -> None:
        self.hosts = hosts
        self.namespace = namespace
        self.scenario = scenario
        self.log_dir = log_dir
        self.kubectl = run_kubectl
        self._problems: dict[str, str] = {}

    async def _pods(self) -> dict[str, dict[str, Any]]:
        listed = json.loads(await self.kubectl("get", "pods", "-n", self.namespace, "-l",
                                               f"{LABEL_SCENARIO}={dns_label(self.scenario, 63)}", "-o", "json"))
        return {p["metadata"]["name"]: p for p in listed.get("items", [])}

    async def first_exit(self) -> PodHost:
        """Completes when a host's pod stops running or restarts, or its port-forward ends."""
        while True:
            for h in self.hosts:
                if h.forward is not None and h.forward.returncode is not None:
                    self._problems[h.name] = f"kubectl port-forward to pod {h.pod} ended"
                    return h
            try:
                pods = await self._pods()
            except DeployError as e:  # the API server is busy or gone: the channels will tell
                log.warning("cannot list pods", error=str(e))
                pods = None
            for h in self.hosts if pods is not None else []:
                assert pods is not None
                problem = pod_problem(pods[h.pod]) if h.pod in pods else f"pod {h.pod} is gone"
                if problem:
                    self._problems[h.name] = problem
                    return h
            await asyncio.sleep(POLL_S)

    async def failure(self, host: PodHost) -> HostFailed:
        reason = self._problems.get(host.name, f"pod {host.pod} failed")
        with contextlib.suppress(DeployError):
            tail = (await self.kubectl("logs", "-n", self.namespace, host.pod, "--tail=5")).strip().splitlines()
            if (on := stopped_on(tail)) is not None:  # an eviction, a drain: the host stopped on it
                reason += f"; the host stopped on {on}"
            if tail:
                reason += "; last log lines: " + " | ".join(tail)
        return HostFailed(host.name, reason)

    async def kill(self, host: PodHost) -> None:
        """Scale its StatefulSet to 0: deleting the pod alone would bring a fresh one back."""
        with contextlib.suppress(DeployError):
            await self.kubectl("scale", "statefulset", host.pod.removesuffix("-0"), "-n", self.namespace,
                               "--replicas=0")

    async def alive(self) -> list[PodHost]:
        try:
            pods = await self._pods()
        except DeployError:
            return []
        return [h for h in self.hosts if h.pod in pods and pod_problem(pods[h.pod]) is None]

    async def stop(self, grace_s: float = 5.0) -> None:
        """End the port-forwards, save each host's log as ``<log_dir>/<host>.log``; the pods stay."""
        for h in self.hosts:
            await h.close_channel()
            if h.forward is not None and h.forward.returncode is None:
                h.forward.terminate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(h.forward.wait(), grace_s)
                if h.forward.returncode is None:
                    h.forward.kill()
                    await h.forward.wait()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for h in self.hosts:
            with contextlib.suppress(DeployError):
                (self.log_dir / f"{h.name}.log").write_text(await self.kubectl("logs", "-n", self.namespace, h.pod))


async def port_forward(host: PodHost, namespace: str, command: tuple[str, ...] = ("kubectl",)) -> None:
    """Forward a free loopback port to the host's pod and attach the host to it."""
    # a process group of its own: a Ctrl-C in the terminal must leave it up to collect the partial results
    proc = await asyncio.create_subprocess_exec(
        *command, "port-forward", "-n", namespace, f"pod/{host.pod}", f":{HOST_PORT}", "--address", "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
        process_group=0)
    host.forward = proc
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), FORWARD_TIMEOUT_S)
    except TimeoutError:
        raise HostFailed(host.name, f"kubectl port-forward to pod {host.pod} said nothing within "
                                    f"{FORWARD_TIMEOUT_S:g} s") from None
    match = FORWARDING.search(line.decode(errors="replace"))
    if match is None:
        err = (await proc.stderr.read()).decode(errors="replace") if proc.returncode is not None else ""
        raise HostFailed(host.name, f"kubectl port-forward to pod {host.pod}: {(err or line.decode()).strip()}")
    # pods hold TESTBED_TOKEN from the Secret testbed-token when it exists: this side needs the same
    host.attach(f"127.0.0.1:{match.group(1)}", os.environ.get(TOKEN_ENV) or None)


async def launch(scenario: Scenario, plan: Plan, run_id: str, log_dir: Path, window_timeout_s: float,
                 options: DeployOptions, run_kubectl: Kubectl = kubectl,
                 forward_command: tuple[str, ...] = ("kubectl",)) -> K8sCluster:
    """Deploy ``plan``'s hosts as pods of the current kubectl context, then load and connect them."""
    manifests = log_dir.parent / "k8s"
    render(scenario.name, plan, manifests, options, scenario.source)
    selector = f"{LABEL_SCENARIO}={dns_label(scenario.name, 63)}"
    namespace = options.namespace
    await run_kubectl("apply", "-k", str(manifests / SHARED))  # the namespace and what every scenario shares
    # a host serves one run: the scenario's earlier pods go before the new ones come
    await run_kubectl("delete", "statefulset", "-n", namespace, "-l", selector, "--ignore-not-found",
                      "--cascade=foreground", "--wait=true")
    await run_kubectl("apply", "-k", str(manifests))
    log.info("manifests applied", directory=str(manifests), hosts=len(plan.hosts))
    await run_kubectl("wait", "--for=condition=Ready", "pod", "-n", namespace, "-l", selector,
                      f"--timeout={READY_TIMEOUT_S}s", timeout_s=READY_TIMEOUT_S + 30)
    names = statefulset_names(scenario.name, plan)
    hosts = [PodHost(host, f"{names[host]}-0", window_timeout_s) for host in plan.hosts]
    cluster = K8sCluster(hosts, namespace, scenario.name, log_dir, run_kubectl)
    try:
        await gather_all(port_forward(h, namespace, forward_command) for h in hosts)
        await gather_all(wait_until_serving(h, SERVING_TIMEOUT_S, _forward_ended(h)) for h in hosts)
        await load_and_connect(list(hosts), scenario, plan, run_id, pod_addresses(scenario.name, plan, namespace))
    except HostFailed as e:
        failure = await explain(cluster, e)
        await cluster.stop()
        raise failure from None
    except BaseException:
        await cluster.stop()
        raise
    return cluster


def _forward_ended(host: PodHost) -> Callable[[], Awaitable[str | None]]:
    """Whether ``host``'s port-forward has ended (its pod went, say): then it cannot come up."""

    async def gone() -> str | None:
        if host.forward is not None and host.forward.returncode is not None:
            return f"kubectl port-forward to pod {host.pod} ended"
        return None

    return gone
