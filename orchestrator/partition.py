"""Partitions: which host runs which device, and how far hosts may run ahead of each other.

``single`` puts every device in one host; ``site`` makes one host per site (devices without a site
go to a host named ``wan``); ``device`` gives every device its own host. The lookahead is the
smallest propagation delay any cut link will ever have (its length may change on the timeline):
a frame sent at t cannot reach another host before t + lookahead. A training job's control bus
(``ScenarioContext.post``) crosses hosts too, a detect delay after what it reports, so with a job
spread over several hosts the lookahead is at most the job's detect delay.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulators.model.scenario import Scenario, propagation_ps

PARTITIONS = ("single", "site", "device")
SINGLE_HOST = "all"
WAN_HOST = "wan"


class PartitionError(ValueError):
    pass


@dataclass(frozen=True)
class Plan:
    mode: str
    hosts: dict[str, tuple[str, ...]]  # host -> device names, hosts in sorted order
    assignment: dict[str, str]  # device -> host
    lookahead_ps: int | None  # None when nothing crosses hosts: no cut link, no job spread over hosts
    cut_links: tuple[str, ...]


def plan_partition(scenario: Scenario, mode: str) -> Plan:
    if mode not in PARTITIONS:
        raise PartitionError(f"unknown partition {mode!r}; choose one of {', '.join(PARTITIONS)}")
    assignment: dict[str, str] = {}
    for d in scenario.devices:
        if mode == "single":
            assignment[d.name] = SINGLE_HOST
        elif mode == "site":
            assignment[d.name] = d.site or WAN_HOST
        else:
            assignment[d.name] = d.name
    hosts: dict[str, list[str]] = {}
    for d in scenario.devices:
        hosts.setdefault(assignment[d.name], []).append(d.name)

    lookahead: int | None = None
    cut: list[str] = []
    for link in scenario.links:
        if assignment[link.a.device] == assignment[link.z.device]:
            continue
        cut.append(link.name)
        lengths = [link.length_mm] + [
            mm for f in scenario.faults if f.link == link.name and (mm := f.length_after_mm()) is not None
        ]
        shortest = min(propagation_ps(mm, link.delay_ps_per_m) for mm in lengths)
        if shortest <= 0:
            raise PartitionError(
                f"partition {mode!r} cuts link {link.name} ({link.a} -- {link.z}), whose propagation "
                f"delay is 0 ps at some point of the run: hosts on either side could never run ahead "
                f"of each other; give the link a length > 0 or use a partition that keeps "
                f"{link.a.device} and {link.z.device} together")
        lookahead = shortest if lookahead is None else min(lookahead, shortest)
    if scenario.job is not None and len(hosts) > 1:
        detect = scenario.job.detect_ps
        if detect <= 0:
            raise PartitionError(
                f"partition {mode!r} spreads the scenario over {len(hosts)} hosts, but the job's detect delay "
                f"is {detect} ps: its control bus needs time to reach the other hosts; give the job a "
                f"detect delay > 0 or use the single partition")
        lookahead = detect if lookahead is None else min(lookahead, detect)
    return Plan(mode, {h: tuple(v) for h, v in sorted(hosts.items())}, assignment, lookahead, tuple(cut))
