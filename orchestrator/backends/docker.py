"""The docker backend: one container per device host, from the testbed image, through the Docker SDK.

Two network modes:

- ``bridge`` (the default): a user-defined bridge network per scenario. Hosts serve on HOST_PORT in
  their own network namespace and reach each other by container name; the coordinator reaches
  each at a port the engine publishes on 127.0.0.1.
- ``host``: the machine's network namespace. Every host serves on its own loopback port, which the
  coordinator and the peers use alike (what tests use: no traffic leaves loopback).

Containers and networks carry the LABEL_* labels of orchestrator.deploy.docker_engine, so ``testbed
down`` removes exactly them. They stay after a run, finished or failed (``testbed status``, ``testbed
logs DEVICE``), until ``testbed down`` or the next run of the same scenario, which replaces them: a host
serves one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import structlog

from emulators.model.scenario import Scenario
from orchestrator.backends.remote import (
    RemoteHost,
    explain,
    load_and_connect,
    run_token,
    signal_name,
    stopped_on,
    token_environment,
    wait_until_serving,
)
from orchestrator.coordinator import HostFailed, gather_all
from orchestrator.deploy import DOCKER_NETWORKS, HOST_PORT, DeployError, DeployOptions, dns_label, host_names
from orchestrator.deploy.docker_engine import (
    LABEL_ADDRESS,
    LABEL_DEVICES,
    LABEL_HOST,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_SCENARIO,
    ROLE_HOST,
    ROLE_NETWORK,
    engine,
    remove,
)
from orchestrator.partition import Plan
from services.host import TOKEN_ENV

log = structlog.get_logger("docker-backend")

NAME_PREFIX = "testbed-"

STARTUP_TIMEOUT_S = 60.0
EXIT_POLL_S = 0.5
SECOND_NS = 1_000_000_000
# the engine runs the probe (a short Python process) in each container: rarely, to stay out of the run's way
HEALTHCHECK = {"interval": 30 * SECOND_NS, "timeout": 5 * SECOND_NS, "retries": 3, "start_period": 10 * SECOND_NS}


def network_name(scenario: str) -> str:
    return dns_label(f"{NAME_PREFIX}{scenario}")


@dataclass(frozen=True)
class HostSpec:
    """One host's container: what to create, and where the coordinator and the peers reach it."""

    host: str
    name: str
    listen: str  # the host's --listen inside its container
    peer_address: str  # where other hosts dial it
    run_kwargs: dict[str, Any]  # for DockerClient.containers.run


def host_specs(scenario: str, plan: Plan, run_id: str, options: DeployOptions,
               loopback_ports: dict[str, int] | None = None, token: str | None = None) -> list[HostSpec]:
    """The containers of ``plan``'s hosts. In host network mode each host needs its own port on
    127.0.0.1 (``loopback_ports``); in bridge mode they all serve on HOST_PORT. ``token`` is the run's
    (remote.run_token()); by default TESTBED_TOKEN, if set."""
    environment = token_environment(token or os.environ.get(TOKEN_ENV))
    if options.docker_network not in DOCKER_NETWORKS:
        raise DeployError(f"unknown docker network mode {options.docker_network!r}; "
                          f"choose one of {', '.join(DOCKER_NETWORKS)}")
    names = host_names(scenario, list(plan.hosts), prefix=NAME_PREFIX)
    specs = []
    for host, devices in plan.hosts.items():
        name = names[host]
        labels = {LABEL_ROLE: ROLE_HOST, LABEL_SCENARIO: scenario, LABEL_HOST: host,
                  LABEL_DEVICES: ",".join(devices), LABEL_RUN: run_id}
        if options.docker_network == "host":
            assert loopback_ports is not None, "host network mode needs a loopback port per host"
            listen = peer_address = f"127.0.0.1:{loopback_ports[host]}"
            labels[LABEL_ADDRESS] = listen
            network: dict[str, Any] = {"network_mode": "host"}
        else:
            listen, peer_address = f"0.0.0.0:{HOST_PORT}", f"{name}:{HOST_PORT}"
            network = {"network": network_name(scenario), "ports": {f"{HOST_PORT}/tcp": ("127.0.0.1",)}}
        probe = "127.0.0.1:" + listen.rsplit(":", 1)[1]
        run_kwargs = {
            "image": options.image,
            "command": ["--name", host, "--listen", listen, "--log-level", options.host_log_level],
            "name": name,
            "labels": labels,
            "detach": True,
            "user": "10001:10001",
            "read_only": True,
            "tmpfs": {"/tmp": "size=16m"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "healthcheck": {"test": ["CMD", "python", "-m", "orchestrator.deploy.probe", probe], **HEALTHCHECK},
            **network,
        }
        if environment:  # the hosts ask for the same token as with the process backend
            run_kwargs["environment"] = environment
        specs.append(HostSpec(host, name, listen, peer_address, run_kwargs))
    return specs


def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (held open together, so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class DockerHost(RemoteHost):
    def __init__(self, spec: HostSpec, container: Any, window_timeout_s: float) -> None:
        super().__init__(spec.host, window_timeout_s)
        self.spec = spec
        self.container = container


class DockerCluster:
    """The run's containers. They are kept when the run ends; ``stop`` saves their logs."""

    def __init__(self, client: Any, hosts: list[DockerHost], run_id: str, log_dir: Path) -> None:
        self.client = client
        self.hosts = hosts
        self.run_id = run_id
        self.log_dir = log_dir

    def _states(self) -> dict[str, str]:
        """Each of this run's containers by name: its state (running, exited, dead...)."""
        listed = self.client.api.containers(all=True, filters={"label": f"{LABEL_RUN}={self.run_id}"})
        return {c["Names"][0].lstrip("/"): c["State"] for c in listed}

    async def first_exit(self) -> DockerHost:
        """Completes when any host's container stops running: during a run, that is a failure."""
        while True:
            try:
                states = await asyncio.to_thread(self._states)
            except docker.errors.DockerException as e:  # the engine is busy: the hosts' channels still watch
                log.warning("cannot list containers", error=str(e))
                states = {h.spec.name: "running" for h in self.hosts}
            for h in self.hosts:
                if states.get(h.spec.name, "removed") != "running":
                    return h
            await asyncio.sleep(EXIT_POLL_S)

    async def failure(self, host: DockerHost) -> HostFailed:
        return HostFailed(host.name, await asyncio.to_thread(describe_exit, host.container))

    async def kill(self, host: DockerHost) -> None:
        with contextlib.suppress(docker.errors.APIError):  # gone, or no longer running
            await asyncio.to_thread(host.container.kill)

    async def alive(self) -> list[DockerHost]:
        try:
            states = await asyncio.to_thread(self._states)
        except docker.errors.DockerException as e:  # the engine is busy: every host may still answer
            log.warning("cannot list containers", error=str(e))
            return list(self.hosts)
        return [h for h in self.hosts if states.get(h.spec.name) == "running"]

    async def stop(self, grace_s: float = 5.0) -> None:
        """Close the coordinator's channels and save every host's log as ``<log_dir>/<host>.log``;
        the containers stay for ``testbed status`` and ``testbed logs`` until ``testbed down``."""
        for h in self.hosts:
            await h.close_channel()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for h in self.hosts:
            with contextlib.suppress(docker.errors.APIError):
                logs = await asyncio.to_thread(h.container.logs, stdout=True, stderr=True)
                (self.log_dir / f"{h.name}.log").write_bytes(logs)
        self.client.close()


def describe_exit(container: Any, lines: int = 5) -> str:
    """Why a container is not running, with the last lines of its log."""
    try:
        container.reload()
    except docker.errors.NotFound:
        return f"container {container.name} was removed"
    except docker.errors.DockerException as e:
        return f"container {container.name}: the engine cannot tell its state ({e})"
    state = container.attrs["State"]
    if state["Status"] == "removing":
        return f"container {container.name} was removed"
    try:
        tail = container.logs(stdout=False, stderr=True, tail=lines).decode(errors="replace").strip().splitlines()
    except docker.errors.DockerException:  # gone meanwhile, or dead: its state says enough
        tail = []
    reason = f"container {container.name} {state['Status']}"
    if state["Status"] in ("exited", "dead"):
        code = state["ExitCode"]
        reason += f" with code {code}"
        if state.get("OOMKilled"):
            reason += " (out of memory)"
        elif code > 128:  # the engine reports a signal as 128 + its number
            reason += f" ({signal_name(code - 128)})"
        elif (on := stopped_on(tail)) is not None:  # the host stopped itself on it (docker stop)
            reason += f" after {on}"
    return reason + (f"; last log lines: {' | '.join(tail)}" if tail else "")


def _start(client: Any, spec: HostSpec) -> Any:
    try:
        return client.containers.run(**spec.run_kwargs)
    except docker.errors.ImageNotFound:
        raise DeployError(f"image {spec.run_kwargs['image']} is not in the Docker engine; build it with "
                          f"`make image`") from None
    except docker.errors.APIError as e:
        raise DeployError(f"cannot start container {spec.name} for host {spec.host}: {e.explanation or e}") from None


def _coordinator_address(container: Any, spec: HostSpec) -> str:
    """Where this machine reaches the host: its loopback port, or the port published for it."""
    if "ports" not in spec.run_kwargs:
        return spec.listen
    try:
        container.reload()
    except docker.errors.NotFound:
        raise HostFailed(spec.host, f"container {spec.name} was removed") from None
    published = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{HOST_PORT}/tcp") or []
    if not published:
        raise HostFailed(spec.host, describe_exit(container))
    return f"127.0.0.1:{published[0]['HostPort']}"


async def launch(scenario: Scenario, plan: Plan, run_id: str, log_dir: Path, window_timeout_s: float,
                 options: DeployOptions, connect: Callable[[], Any] = engine) -> DockerCluster:
    """Start one container per host of ``plan``, wait until each serves (grpc.health.v1), load and
    connect them. Containers left by an earlier run of the same scenario are removed first.
    ``connect()`` returns the engine's client."""
    client = await asyncio.to_thread(connect)
    ports = None
    if options.docker_network == "host":
        ports = dict(zip(plan.hosts, free_loopback_ports(len(plan.hosts)), strict=True))
    token = run_token()
    specs = host_specs(scenario.name, plan, run_id, options, ports, token)
    try:
        await asyncio.to_thread(client.images.get, options.image)
    except docker.errors.ImageNotFound:
        raise DeployError(f"image {options.image} is not in the Docker engine; build it with `make image`") from None
    old, _ = await asyncio.to_thread(remove, client, scenario.name)
    if old:
        log.info("removed the containers of an earlier run", containers=len(old))
    if options.docker_network == "bridge":
        name = network_name(scenario.name)
        try:
            await asyncio.to_thread(client.networks.create, name, driver="bridge",
                                    labels={LABEL_ROLE: ROLE_NETWORK, LABEL_SCENARIO: scenario.name})
        except docker.errors.APIError as e:
            raise DeployError(f"cannot create the network {name}: {e.explanation or e}") from None
    containers = await asyncio.gather(*(asyncio.to_thread(_start, client, s) for s in specs))
    hosts = [DockerHost(s, c, window_timeout_s) for s, c in zip(specs, containers, strict=True)]
    for h in hosts:
        log.info("container started", host=h.name, container=h.spec.name)
    cluster = DockerCluster(client, hosts, run_id, log_dir)
    try:
        await gather_all(_await_serving(h, token) for h in hosts)
        await load_and_connect(list(hosts), scenario, plan, run_id, {h.name: h.spec.peer_address for h in hosts})
    except HostFailed as e:
        failure = await explain(cluster, e)
        await cluster.stop()
        raise failure from None
    except BaseException:
        await cluster.stop()
        raise
    return cluster


async def _await_serving(host: DockerHost, token: str) -> None:
    host.attach(await asyncio.to_thread(_coordinator_address, host.container, host.spec), token)

    def why_gone() -> str | None:
        try:
            host.container.reload()
        except docker.errors.NotFound:
            return f"container {host.spec.name} was removed"
        except docker.errors.DockerException:  # the engine is busy: the health checks go on until the timeout
            return None
        if host.container.status in ("created", "running"):
            return None
        return describe_exit(host.container)

    async def gone() -> str | None:
        return await asyncio.to_thread(why_gone)

    await wait_until_serving(host, STARTUP_TIMEOUT_S, gone)
