"""What the testbed image installs: the packages a device host imports, at pyproject.toml's pins.

``python -m orchestrator.deploy.image requirements`` prints them as a requirements file; the
image build (scripts/build-image.sh) fills a wheelhouse from it on the host machine.
The orchestrator's own packages (the scenario loader, reports, the Docker SDK) stay out of the image.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# pygnmi: the gnmi.proto stubs the host serves; msgspec: the resolved scenario a host receives (emulators.model)
HOST_PACKAGES = ("grpcio", "grpcio-health-checking", "grpcio-reflection", "protobuf", "numpy", "structlog",
                 "pygnmi", "msgspec")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def host_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """``HOST_PACKAGES`` as pinned in ``pyproject``'s dependencies (each must be pinned there)."""
    pins: dict[str, str] = {}
    for requirement in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        name = re.split(r"[=<>!~\[; ]", requirement, maxsplit=1)[0]
        pins[canonical(name)] = requirement
    missing = [p for p in HOST_PACKAGES if canonical(p) not in pins]
    if missing:
        raise ValueError(f"{pyproject}: no dependency pins {', '.join(missing)}, which the device host needs")
    return [pins[canonical(p)] for p in HOST_PACKAGES]


def main(argv: list[str]) -> int:
    if argv != ["requirements"]:
        print("usage: python -m orchestrator.deploy.image requirements", file=sys.stderr)
        return 2
    print("\n".join(host_requirements()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
