"""The testbed's containers on a Docker engine: how they are labelled, listed, found and removed.

The docker backend (orchestrator.backends.docker) labels what it starts; ``testbed status``, ``logs``
and ``down`` (orchestrator.deploy.containers) read the labels back.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from orchestrator.deploy import HOST_PORT, DeployError

LABEL_ROLE = "aicn-testbed.role"  # "device-host" on containers, "network" on networks
LABEL_SCENARIO = "aicn-testbed.scenario"
LABEL_HOST = "aicn-testbed.host"
LABEL_DEVICES = "aicn-testbed.devices"  # comma-separated: what `testbed logs DEVICE` looks for
LABEL_RUN = "aicn-testbed.run"
LABEL_ADDRESS = "aicn-testbed.address"  # where the coordinator reached the host (host network mode)
ROLE_HOST = "device-host"
ROLE_NETWORK = "network"


def engine() -> Any:
    """A client of the local Docker engine; DeployError (saying how to start one) if none answers."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as e:
        raise DeployError(f"no Docker engine answers ({e}); start one with scripts/docker-engine.sh") from None
    return client


def remove(client: Any, scenario: str | None = None) -> tuple[list[str], list[str]]:
    """Remove the testbed's containers and networks (only ``scenario``'s, if given); their names."""
    label = [LABEL_ROLE] if scenario is None else [LABEL_ROLE, f"{LABEL_SCENARIO}={scenario}"]
    containers = client.containers.list(all=True, filters={"label": label}, ignore_removed=True)
    removed = []
    for c in containers:
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True)
            removed.append(c.name)
    networks = []
    for n in client.networks.list(filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound):
            n.remove()
            networks.append(n.name)
    return removed, networks


@dataclass(frozen=True)
class ContainerStatus:
    name: str
    scenario: str
    host: str
    devices: tuple[str, ...]
    state: str  # running, exited...
    health: str  # the engine's health check: healthy, unhealthy, starting, or "-" when not running
    address: str  # where this machine reaches its gRPC server ("-" when not running)


def statuses(client: Any) -> list[ContainerStatus]:
    """Every testbed container, by scenario and host."""
    rows = []
    for c in client.containers.list(all=True, filters={"label": [LABEL_ROLE]}, ignore_removed=True):
        labels = c.labels
        if labels.get(LABEL_ROLE) != ROLE_HOST:
            continue
        state = c.attrs["State"]
        health = state.get("Health", {}).get("Status", "-") if state["Status"] == "running" else "-"
        devices = tuple(d for d in labels.get(LABEL_DEVICES, "").split(",") if d)
        published = (c.attrs["NetworkSettings"].get("Ports") or {}).get(f"{HOST_PORT}/tcp") or []
        address = labels.get(LABEL_ADDRESS) or (f"127.0.0.1:{published[0]['HostPort']}" if published else "-")
        if state["Status"] != "running":
            address = "-"
        rows.append(ContainerStatus(c.name, labels.get(LABEL_SCENARIO, "?"), labels.get(LABEL_HOST, "?"),
                                    devices, state["Status"], health, address))
    return sorted(rows, key=lambda r: (r.scenario, r.host))


class UnknownDevice(LookupError):
    """No testbed container runs the device (or several do): the message lists what does."""


def device_container(client: Any, device: str, scenario: str | None = None) -> Any:
    """The container that hosts ``device`` (a device or host name), within ``scenario`` if given."""
    label = [LABEL_ROLE + "=" + ROLE_HOST] + ([f"{LABEL_SCENARIO}={scenario}"] if scenario else [])
    containers = client.containers.list(all=True, filters={"label": label}, ignore_removed=True)
    matches = [c for c in containers
               if device == c.labels.get(LABEL_HOST) or device in c.labels.get(LABEL_DEVICES, "").split(",")]
    if len(matches) == 1:
        return matches[0]
    if matches:
        scenarios = sorted(c.labels.get(LABEL_SCENARIO, "?") for c in matches)
        raise UnknownDevice(f"device {device!r} runs in several scenarios ({', '.join(scenarios)}); "
                            f"pick one with --scenario")
    known = sorted({d for c in containers for d in c.labels.get(LABEL_DEVICES, "").split(",") if d})
    where = f" of scenario {scenario!r}" if scenario else ""
    if not known:
        raise UnknownDevice(f"no testbed container{where} is there; start some with "
                            f"`testbed run SCENARIO --backend docker` (or `make up`)")
    raise UnknownDevice(f"no testbed container{where} hosts device {device!r}; devices: {', '.join(known)}")
