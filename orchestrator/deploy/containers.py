"""``testbed status``, ``testbed logs DEVICE`` and ``testbed down``: the docker backend's containers.

The engine may be shared: ``down`` removes only what this checkout started (the scenarios that
``testbed run --backend docker`` noted in RECORD since the last ``down``), one scenario by name, or,
with ``--all``, every testbed container.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import docker.errors

from orchestrator.deploy import DeployError
from orchestrator.deploy.docker_engine import UnknownDevice, device_container, engine, remove, statuses

RECORD = Path(__file__).resolve().parents[2] / "out" / ".docker-scenarios"  # in the checkout, one name a line


def record_scenarios(names: list[str]) -> None:
    """Note scenarios this checkout runs in containers (before they start: a failed run leaves some too)."""
    _write_record(recorded_scenarios() + names)


def recorded_scenarios() -> list[str]:
    try:
        return [line for line in RECORD.read_text().splitlines() if line]
    except FileNotFoundError:
        return []


def _write_record(names: list[str]) -> None:
    if not names:
        RECORD.unlink(missing_ok=True)
        return
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text("".join(f"{name}\n" for name in dict.fromkeys(names)))


def manage_containers(args: argparse.Namespace) -> int:
    """0 done; 1 no Docker engine (``down`` has nothing to remove then, and says so); 2 unknown device."""
    try:
        client = engine()
    except DeployError as e:
        if args.command == "down":
            print(f"nothing to remove: {e}", file=sys.stderr)
            return 0
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        if args.command == "status":
            print(status_table(client))
            return 0
        if args.command == "logs":
            return print_logs(client, args.device, args.scenario, args.tail)
        print(down(client, args.scenario, args.all))
        return 0
    except docker.errors.DockerException as e:  # the engine refused (a removal already under way, say)
        print(f"error: the Docker engine: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except OSError as e:  # the record of this checkout's scenarios (an APIError is an OSError too: above)
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()


def down(client: object, scenario: str | None = None, everything: bool = False) -> str:
    """Remove containers and networks: ``scenario``'s, every testbed one (``everything``), or else those
    of the scenarios noted in RECORD; what was done, in one line."""
    if everything:
        containers, networks = remove(client)
        _write_record([])
        return f"removed {_counted(containers, networks)} (every testbed container)"
    if scenario is not None:
        containers, networks = remove(client, scenario)
        _write_record([name for name in recorded_scenarios() if name != scenario])
        return f"removed {_counted(containers, networks)} of scenario {scenario}"
    noted = recorded_scenarios()
    if not noted:
        others = len({row.scenario for row in statuses(client)})
        return ("nothing to remove: no scenario run from this checkout with --backend docker since the last "
                "`testbed down`" + (f"; {others} other scenario{'' if others == 1 else 's'} on the engine: "
                                    f"`testbed down --scenario NAME` (`testbed status` lists them) or `--all`"
                                    if others else ""))
    containers, networks = [], []
    for name in noted:
        removed = remove(client, name)
        containers += removed[0]
        networks += removed[1]
    _write_record([])
    return f"removed {_counted(containers, networks)} of scenario{'' if len(noted) == 1 else 's'} {', '.join(noted)}"


def _counted(containers: list[str], networks: list[str]) -> str:
    return (f"{len(containers)} container{'' if len(containers) == 1 else 's'} and "
            f"{len(networks)} network{'' if len(networks) == 1 else 's'}")


def status_table(client: object) -> str:
    rows = statuses(client)
    if not rows:
        return "no testbed containers (start some with `testbed run SCENARIO --backend docker` or `make up`)"
    header = ("CONTAINER", "SCENARIO", "HOST", "DEVICES", "STATE", "HEALTH", "ADDRESS")
    table = [header] + [(r.name, r.scenario, r.host, _devices(r.devices), r.state, r.health, r.address) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table)


def _devices(devices: tuple[str, ...]) -> str:
    return ",".join(devices) if len(devices) <= 3 else f"{','.join(devices[:2])},... ({len(devices)})"


def print_logs(client: object, device: str, scenario: str | None, tail: int | None) -> int:
    try:
        container = device_container(client, device, scenario)
    except UnknownDevice as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = container.logs(stdout=True, stderr=True, tail=tail if tail is not None else "all")
    sys.stdout.write(text.decode(errors="replace"))
    return 0
