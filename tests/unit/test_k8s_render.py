"""`testbed render k8s`: a kustomization over k8s/ that builds (kubectl kustomize) into manifests valid
for a pinned Kubernetes version (kubernetes-validate), one StatefulSet per host of the partition."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from orchestrator import cli
from orchestrator.deploy import DeployError, DeployOptions
from orchestrator.deploy.k8s_render import image_fields, pod_addresses, render, statefulset_names
from orchestrator.partition import PARTITIONS, plan_partition
from orchestrator.scenario.loader import load_scenario

KUBERNETES_VERSION = "1.32.0"  # as `make k8s-check`


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR``; CI has kubectl, elsewhere the test skips (and says so) without it."""
    if shutil.which("kubectl") is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is needed to build the kustomization")
        pytest.skip("kubectl is not installed")
    built = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


@pytest.fixture(scope="module")
def default_scenario() -> Any:
    return load_scenario("scenarios/default.yaml")


@pytest.mark.parametrize("partition", PARTITIONS)
def test_default_scenario_renders_valid_manifests_in_every_partition(partition: str, default_scenario: Any,
                                                                     tmp_path: Path) -> None:
    plan = plan_partition(default_scenario, partition)
    render(default_scenario.name, plan, tmp_path, DeployOptions())
    hosts, shared = kustomize(tmp_path), kustomize(tmp_path / "shared")
    # `kubectl delete -k DIR` deletes only the scenario's StatefulSets, never what others share
    assert {obj["kind"] for obj in hosts} == {"StatefulSet"}
    objects = hosts + shared
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
        assert obj["metadata"].get("namespace", "aicn-testbed") == "aicn-testbed"
    assert sorted(by_kind) == ["Namespace", "NetworkPolicy", "Service", "StatefulSet"]
    sets = {s["metadata"]["name"]: s for s in by_kind["StatefulSet"]}
    names = statefulset_names(default_scenario.name, plan)
    assert set(sets) == set(names.values()) and len(sets) == len(plan.hosts)
    for host, devices in plan.hosts.items():
        sts = sets[names[host]]
        pod = sts["spec"]["template"]
        container = pod["spec"]["containers"][0]
        assert container["args"][:2] == ["--name", host]
        assert container["image"] == "aicn-testbed:latest" and container["imagePullPolicy"] == "Never"  # kind
        assert pod["metadata"]["annotations"]["aicn-testbed/devices"] == ",".join(devices)
        assert sts["spec"]["selector"]["matchLabels"]["aicn-testbed/host"] == pod["metadata"]["labels"][
            "aicn-testbed/host"]
        assert container["readinessProbe"]["grpc"]["port"] == container["livenessProbe"]["grpc"]["port"] == 50051
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert sts["spec"]["serviceName"] == "device-hosts"
    (service,) = by_kind["Service"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    (policy,) = by_kind["NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [50051]


def test_base_overlay_namespace_and_image_are_options(default_scenario: Any, tmp_path: Path) -> None:
    plan = plan_partition(default_scenario, "site")
    options = DeployOptions(image="registry.example:5000/team/testbed:1.2", namespace="lab", overlay="base")
    render(default_scenario.name, plan, tmp_path, options)
    objects = kustomize(tmp_path) + kustomize(tmp_path / "shared")
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"lab"}
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == ["lab"]
    containers = [o["spec"]["template"]["spec"]["containers"][0] for o in objects if o["kind"] == "StatefulSet"]
    assert {c["image"] for c in containers} == {"registry.example:5000/team/testbed:1.2"}
    assert {c["imagePullPolicy"] for c in containers} == {"IfNotPresent"}


def test_rendering_again_replaces_the_hosts_of_the_earlier_partition(default_scenario: Any, tmp_path: Path) -> None:
    render(default_scenario.name, plan_partition(default_scenario, "device"), tmp_path, DeployOptions())
    render(default_scenario.name, plan_partition(default_scenario, "site"), tmp_path, DeployOptions())
    assert sorted(p.name for p in (tmp_path / "hosts").iterdir()) == ["default-dc1", "default-dc2"]


def test_hosts_dial_each_other_by_pod_name_under_the_headless_service(default_scenario: Any) -> None:
    plan = plan_partition(default_scenario, "site")
    assert pod_addresses("default", plan, "lab") == {"dc1": "default-dc1-0.device-hosts.lab.svc:50051",
                                                     "dc2": "default-dc2-0.device-hosts.lab.svc:50051"}


@pytest.mark.parametrize(("image", "fields"), [
    ("aicn-testbed:latest", {"newName": "aicn-testbed", "newTag": "latest"}),
    ("aicn-testbed", {"newName": "aicn-testbed", "newTag": "latest"}),
    ("localhost:5000/aicn-testbed", {"newName": "localhost:5000/aicn-testbed", "newTag": "latest"}),
    ("localhost:5000/aicn-testbed:v2", {"newName": "localhost:5000/aicn-testbed", "newTag": "v2"}),
    ("aicn-testbed@sha256:abc", {"newName": "aicn-testbed", "digest": "sha256:abc"}),
])
def test_image_references_become_kustomize_image_fields(image: str, fields: dict[str, str]) -> None:
    assert image_fields(image) == {"name": "aicn-testbed", **fields}


def test_an_unknown_overlay_is_refused(default_scenario: Any, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="unknown overlay 'gke'; choose one of base, kind"):
        render("default", plan_partition(default_scenario, "single"), tmp_path, DeployOptions(overlay="gke"))


def test_render_command_writes_the_directory_and_refuses_an_impossible_partition(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)  # keep structlog on the real stderr
    out = tmp_path / "k8s"
    assert cli.main(["render", "k8s", "scenarios/testers.yaml", "--partition", "device", "--out", str(out)]) == 0
    assert capsys.readouterr().out == (
        f"{out}: 4 device hosts of scenario testers, partition device; deploy with `kubectl apply -k {out}/shared` "
        f"(once: the namespace and what every scenario shares) and `kubectl apply -k {out}`; "
        f"`kubectl delete -k {out}` removes this scenario's hosts only\n")
    assert len(list((out / "hosts").iterdir())) == 4
    zero_length = tmp_path / "zero.yaml"
    zero_length.write_text(Path("scenarios/testers.yaml").read_text().replace("length: 100m", "length: 0m"))
    assert cli.main(["render", "k8s", str(zero_length), "--partition", "device", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: partition 'device' cuts link lan-a") and err.count("\n") == 1


@pytest.mark.parametrize("name", ["../escape", "a/b", "x\nnamespace: kube-system", ".hidden", "\x1b[31mred", ""])
def test_a_name_unsafe_for_a_path_or_a_manifest_is_refused_before_anything_is_written(name: str,
                                                                                     tmp_path: Path) -> None:
    plan = plan_partition(load_scenario("scenarios/testers.yaml"), "single")
    with pytest.raises(DeployError, match="cannot name a directory or Kubernetes objects"):
        render(name, plan, tmp_path / "out", DeployOptions())
    assert list(tmp_path.iterdir()) == []


def test_a_source_path_with_line_breaks_stays_inside_its_comment(default_scenario: Any, tmp_path: Path) -> None:
    render("default", plan_partition(default_scenario, "single"), tmp_path, DeployOptions(),
           source="evil\nnamespace: kube-system\u2028x.yaml")
    top = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())
    assert top["namespace"] == "aicn-testbed" and set(top) == {"apiVersion", "kind", "namespace", "resources",
                                                                "images"}
    assert (tmp_path / "kustomization.yaml").read_text().count("\n#") == 1  # two comment lines, then YAML


def test_a_kustomization_someone_else_wrote_is_not_replaced(default_scenario: Any, tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [mine.yaml]\n")
    (tmp_path / "hosts").mkdir()
    with pytest.raises(DeployError, match="was not written by `testbed render k8s`; choose another --out"):
        render("default", plan_partition(default_scenario, "single"), tmp_path, DeployOptions())
    assert (tmp_path / "kustomization.yaml").read_text() == "resources: [mine.yaml]\n"
    assert (tmp_path / "hosts").is_dir()


def test_render_refuses_an_out_it_cannot_write_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)
    (tmp_path / "file").write_text("")
    assert cli.main(["render", "k8s", "scenarios/testers.yaml", "--out", str(tmp_path / "file" / "k8s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path}/file/k8s cannot be written") and err.count("\n") == 1
