"""Kubernetes manifests for a scenario's hosts, over the kustomize base in k8s/.

``render`` writes two kustomizations::

    DIR/kustomization.yaml        the scenario's hosts below, in one namespace, one image: nothing
                                  other scenarios use, so `kubectl delete -k DIR` removes them alone
    DIR/hosts/HOST/kustomization.yaml
                                  the overlay's device-host template as StatefulSet SCENARIO-HOST,
                                  labelled with the scenario and host, started with --name HOST
    DIR/shared/kustomization.yaml the overlay's shared objects (namespace, headless Service,
                                  NetworkPolicy) in that namespace: every scenario's hosts use them,
                                  and the namespace holds the token Secret; applied, never deleted

``kubectl apply -k DIR/shared`` then ``kubectl apply -k DIR`` deploys it; ``kubectl kustomize DIR``
shows it. An overlay is a directory of k8s/ with a kustomization of shared objects and a
``device-host/`` kustomization of the template: ``base`` (k8s/base) or ``kind`` (k8s/overlays/kind).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from orchestrator.deploy import HOST_PORT, DeployError, DeployOptions, dns_label, host_names
from orchestrator.partition import Plan

K8S_DIR = Path(__file__).resolve().parents[2] / "k8s"
OVERLAYS = {"base": Path("base"), "kind": Path("overlays/kind")}
SERVICE = "device-hosts"  # the headless Service in k8s/base/service.yaml
TEMPLATE = "device-host"  # the StatefulSet in k8s/base/device-host/statefulset.yaml
IMAGE_NAME = "aicn-testbed"  # the image the template names; `images:` replaces it
LABEL_SCENARIO = "aicn-testbed/scenario"
LABEL_HOST = "aicn-testbed/host"
ANNOTATION_DEVICES = "aicn-testbed/devices"
SHARED = "shared"  # DIR/shared: the kustomization of what every scenario shares
WRITTEN_BY = "# Written by `testbed render k8s`"  # how a rendered kustomization.yaml starts its second line
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")  # one path component, one line, no '..'


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the patches) as literal blocks, the way a person writes them."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def to_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1000)


def check_scenario_name(name: str) -> None:
    """DeployError unless ``name`` is safe as a directory name and in manifests (the loader's rule is
    stricter; this holds for scenarios built in memory too)."""
    if not SAFE_NAME.fullmatch(name):
        raise DeployError(f"the scenario name {name[:60]!r} cannot name a directory or Kubernetes objects; "
                          f"use letters, digits, '.', '_' or '-', starting with a letter or digit")


def overlay_dir(overlay: str, k8s_dir: Path = K8S_DIR) -> Path:
    if overlay not in OVERLAYS:
        raise DeployError(f"unknown overlay {overlay!r}; choose one of {', '.join(OVERLAYS)}")
    path = k8s_dir / OVERLAYS[overlay]
    if not (path / "kustomization.yaml").is_file() or not (path / TEMPLATE / "kustomization.yaml").is_file():
        raise DeployError(f"{path} is not a testbed overlay (kustomization.yaml and {TEMPLATE}/kustomization.yaml)")
    return path


def statefulset_names(scenario: str, plan: Plan) -> dict[str, str]:
    """Each host's StatefulSet; its one pod is the name plus ``-0``."""
    return host_names(scenario, list(plan.hosts))


def pod_addresses(scenario: str, plan: Plan, namespace: str) -> dict[str, str]:
    """Where hosts dial each other: the pod's stable name under the headless Service."""
    return {host: f"{name}-0.{SERVICE}.{namespace}.svc:{HOST_PORT}"
            for host, name in statefulset_names(scenario, plan).items()}


def image_fields(image: str) -> dict[str, str]:
    """A kustomize ``images:`` entry putting ``image`` (name[:tag] or name@digest) in the template."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return {"name": IMAGE_NAME, "newName": name, "digest": digest}
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag: the colon (if any) belonged to a registry's port
        return {"name": IMAGE_NAME, "newName": image, "newTag": "latest"}
    return {"name": IMAGE_NAME, "newName": name, "newTag": tag}


def host_kustomization(scenario: str, host: str, devices: tuple[str, ...], name: str, template: str,
                       options: DeployOptions) -> dict[str, Any]:
    args = ["--name", host, "--listen", f"0.0.0.0:{HOST_PORT}", "--log-level", options.host_log_level]
    operations = [
        {"op": "replace", "path": "/metadata/name", "value": name},
        {"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": args},
        {"op": "add", "path": "/spec/template/metadata/annotations", "value": {ANNOTATION_DEVICES: ",".join(devices)}},
    ]
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [template],
        "labels": [{"pairs": {LABEL_SCENARIO: dns_label(scenario, 63), LABEL_HOST: dns_label(host, 63)},
                    "includeSelectors": True}],
        "patches": [{"target": {"kind": "StatefulSet", "name": TEMPLATE}, "options": {"allowNameChange": True},
                     "patch": to_yaml(operations)}],
    }


def render(scenario: str, plan: Plan, out_dir: Path, options: DeployOptions, source: str = "",
           k8s_dir: Path = K8S_DIR) -> list[Path]:
    """Write the kustomizations of ``plan``'s hosts and of what they share to ``out_dir`` (replacing an
    earlier rendering there); the files, the hosts' kustomization first, then the shared one."""
    check_scenario_name(scenario)
    overlay = overlay_dir(options.overlay, k8s_dir)
    names = statefulset_names(scenario, plan)
    top_path = out_dir / "kustomization.yaml"
    if top_path.exists():
        if WRITTEN_BY not in top_path.read_text(errors="replace")[:1000]:
            raise DeployError(f"{top_path} was not written by `testbed render k8s`; choose another --out")
        shutil.rmtree(out_dir / "hosts", ignore_errors=True)
    written = []
    for host, devices in plan.hosts.items():
        host_dir = out_dir / "hosts" / names[host]
        host_dir.mkdir(parents=True, exist_ok=True)
        template = os.path.relpath(overlay / TEMPLATE, host_dir.resolve())
        path = host_dir / "kustomization.yaml"
        path.write_text(to_yaml(host_kustomization(scenario, host, devices, names[host], template, options)))
        written.append(path)
    shared_dir = out_dir / SHARED
    shared_dir.mkdir(exist_ok=True)
    shared = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": options.namespace,
        "resources": [os.path.relpath(overlay, shared_dir.resolve())],
    }
    shared_path = shared_dir / "kustomization.yaml"
    shared_path.write_text(f"# The namespace {options.namespace} and the objects every scenario's hosts share there, "
                           f"over k8s/{OVERLAYS[options.overlay]}.\n{WRITTEN_BY}: apply it once "
                           f"(`kubectl apply -k {_comment(shared_dir)}`); deleting it deletes the namespace, every "
                           f"scenario's hosts in it and the token Secret.\n" + to_yaml(shared))
    top = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": options.namespace,
        "resources": [f"hosts/{names[h]}" for h in plan.hosts],
        "images": [image_fields(options.image)],
    }
    hosts = f"{len(plan.hosts)} device host{'s' if len(plan.hosts) != 1 else ''}"
    header = (f"# Scenario {scenario}{f' ({_comment(source)})' if source else ''}, partition {plan.mode}: "
              f"{hosts} over k8s/{OVERLAYS[options.overlay]}.\n"
              f"{WRITTEN_BY}; deploy with `kubectl apply -k {_comment(shared_dir)}` (once) and "
              f"`kubectl apply -k {_comment(out_dir)}`; `kubectl delete -k {_comment(out_dir)}` removes these "
              f"hosts and nothing any other scenario uses.\n")
    top_path.write_text(header + to_yaml(top))
    return [top_path, shared_path, *written]


def _comment(text: object) -> str:
    """A path in a YAML comment: quoted and escaped when it has a character that could end the line."""
    text = str(text)
    return text if text.isprintable() else json.dumps(text)
