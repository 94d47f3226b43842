"""``testbed status``, ``testbed logs DEVICE`` and ``testbed down``: the docker backend's containers."""

from __future__ import annotations

import argparse
import sys

from orchestrator.backends.docker import UnknownDevice, device_container, engine, remove, statuses
from orchestrator.deploy import DeployError


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
        containers, networks = remove(client, args.scenario)
        print(f"removed {len(containers)} container{'' if len(containers) == 1 else 's'} and "
              f"{len(networks)} network{'' if len(networks) == 1 else 's'}"
              + (f" of scenario {args.scenario}" if args.scenario else ""))
        return 0
    finally:
        client.close()


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
