"""What the docker and k8s backends share: how to deploy, and how hosts are named.

Kept free of third-party imports: the image's health probe (``orchestrator.deploy.probe``) lives
in this package and the image carries only what a device host needs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

DEFAULT_IMAGE = "aicn-testbed:latest"
HOST_PORT = 50051  # where a host serves inside its own network namespace (a bridge network, a pod)
DOCKER_NETWORKS = ("bridge", "host")
K8S_NAMESPACE = "aicn-testbed"
MAX_NAME = 52  # a StatefulSet's name: its pods' controller-revision-hash label adds 11 characters to 63


class DeployError(RuntimeError):
    """The hosts could not be deployed: the message says what to fix (start the engine, build the image...)."""


@dataclass(frozen=True)
class DeployOptions:
    """How the docker and k8s backends deploy a run's hosts."""

    image: str = DEFAULT_IMAGE
    docker_network: str = "bridge"  # bridge: a network per scenario; host: loopback ports on this machine
    namespace: str = K8S_NAMESPACE
    overlay: str = "kind"  # the k8s/ kustomization the rendered manifests build on: base or kind
    host_log_level: str = "info"


def dns_label(text: str, limit: int = MAX_NAME) -> str:
    """``text`` as an RFC 1123 label (lower case, digits, '-'), which Docker and Kubernetes both
    accept as a name and a DNS name; too long a name keeps its start and gains a short hash."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    label = re.sub(r"-{2,}", "-", label)
    if len(label) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        label = label[: limit - 9].rstrip("-") + "-" + digest
    return label


def host_names(scenario: str, hosts: list[str] | tuple[str, ...], prefix: str = "") -> dict[str, str]:
    """Each host's container or StatefulSet name: ``PREFIX-SCENARIO-HOST`` as a DNS label, unique."""
    names = {h: dns_label(f"{prefix}{scenario}-{h}") for h in hosts}
    seen: dict[str, str] = {}
    for host, name in names.items():
        if name in seen:
            raise DeployError(f"hosts {seen[name]!r} and {host!r} both become {name!r} as container names; "
                              f"rename one of the devices")
        seen[name] = host
    return names
