"""The image's contents: the host's packages at pyproject's pins, and nothing else a host imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.deploy.image import HOST_PACKAGES, host_requirements

REPO = Path(__file__).resolve().parents[2]

# Imports every module of the packages the image copies and every device kind's model, refusing any
# third-party module that is not one of the image's distributions (or what they depend on).
IMPORT_ALL = textwrap.dedent("""
    import importlib, importlib.metadata as md, pkgutil, re, sys

    wanted = set(sys.argv[1:])
    def requirements(dist):
        for req in md.requires(dist) or []:
            if "extra ==" not in req:
                yield re.split(r"[ ;<>=!~\\[(]", req, maxsplit=1)[0]
    closure, todo = set(), list(wanted)
    while todo:
        dist = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if dist not in closure:
            closure.add(dist)
            todo.extend(requirements(dist))
    allowed = {"emulators", "services", "orchestrator", "testbed"}
    for top, dists in md.packages_distributions().items():
        if any(re.sub(r"[-_.]+", "-", d).lower() in closure for d in dists):
            allowed.add(top)

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if top in sys.stdlib_module_names or top in allowed or top.startswith("_"):
                return None
            raise ImportError(f"{name} is not in the image")
    sys.meta_path.insert(0, Refuse())

    import emulators, services
    from emulators.registry import DEVICE_KINDS
    for package in (emulators, services):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)
    for kind in DEVICE_KINDS.values():
        kind.load_class()
    importlib.import_module("orchestrator.deploy.probe")
    print("ok", len(DEVICE_KINDS))
""")


def test_the_host_packages_come_pinned_from_pyproject() -> None:
    requirements = host_requirements()
    assert [r.split("==")[0] for r in requirements] == list(HOST_PACKAGES)
    assert all("==" in r for r in requirements)


def test_a_package_the_host_needs_must_be_pinned(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["grpcio==1.0", "numpy==2.0"]\n')
    with pytest.raises(ValueError, match="no dependency pins grpcio-health-checking, grpcio-reflection, protobuf"):
        host_requirements(pyproject)


def test_every_device_kind_and_the_host_import_only_what_the_image_installs() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL, *HOST_PACKAGES], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok ")


def test_the_image_copies_what_a_host_runs_and_only_that() -> None:
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    dockerfile = (REPO / "Dockerfile").read_text()
    for needed in ("build/wheelhouse", "gen", "emulators", "services", "orchestrator"):
        assert f"!{needed}" in ignored
        assert f"COPY {needed} " in dockerfile
    assert ignored[1] == "*"  # everything else stays out of the build context
    assert "ARG BASE_IMAGE=python:3.11-slim" in dockerfile and "USER 10001:10001" in dockerfile
    assert "--no-index" in dockerfile  # nothing is downloaded during the build
