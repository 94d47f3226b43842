"""Pass 5 (with the resolver): checks across the resolved scenario that no single entry shows: how much a
run would sample and whether the ranks that talk can reach each other (each device kind checks its own
across the scenario: emulators.kinds.DeviceKind.check_scenario).

Each refuses with a :class:`~orchestrator.errors.KeyProblem` at a key path of the expanded document.
"""

from __future__ import annotations

from typing import Any

from emulators.context import ScenarioContext
from emulators.kernel.port import PORT_COUNTERS
from emulators.model.job import ALL_TO_ALL, JobPlan
from emulators.model.scenario import DeviceSpec, Endpoint, Scenario
from emulators.model.units import format_time, shown
from emulators.rdma.host import nic_ports_of
from emulators.registry import DEVICE_KINDS
from orchestrator.errors import KeyPath, KeyProblem
from orchestrator.workload.placement import scale_up_domains

DEFAULT_SAMPLE_INTERVAL = "1ms"
# A run keeps every sample of every port counter in its hosts and writes them to results.json (~100 bytes a
# value in a host): 20 million is ~2 GiB; the scenarios here sample at most 3.7 million.
MAX_SAMPLED_VALUES = 20_000_000


def check_samples(devices: tuple[DeviceSpec, ...], duration_ps: int, interval_ps: int, written: Any = None) -> None:
    """Every sample holds every port counter of every device, kept by the hosts and written to
    results.json: refuse runs that would keep more than :data:`MAX_SAMPLED_VALUES` of them. ``written``: the
    sample_interval as written, if it was."""
    series = len(PORT_COUNTERS) * sum(len(device.ports) for device in devices)  # devices add a few more
    samples = duration_ps // interval_ps + 1  # one at 0, one every interval up to the end
    if series * samples <= MAX_SAMPLED_VALUES:
        return
    most = MAX_SAMPLED_VALUES // series  # samples that fit
    if most > 0:  # the interval i fits when duration // i < most
        least = _time_text(_round_up(duration_ps // most + 1))
        fix = f"use a sample_interval of at least {least}, or a shorter duration"
    else:
        fix = "use fewer ports"
    given = shown(written) if written is not None else f"the default {DEFAULT_SAMPLE_INTERVAL}"
    raise KeyProblem(("sample_interval",), (
        f"{given} over {format_time(duration_ps)} takes {samples:,} samples of at least {series:,} counters "
        f"({series * samples:,} values); a run keeps at most {MAX_SAMPLED_VALUES:,}: {fix}"))


def check_reach(scenario: Scenario, where: KeyPath = ("job", "placement")) -> None:
    """Every pair of GPUs on different servers that the job's programs make talk must be in one
    supernode (their scale-up ports on one connected set of OLink switches) or have NICs with a
    path between them, or the run would wait forever."""
    plan = scenario.job
    assert plan is not None
    context = ScenarioContext(scenario, DEVICE_KINDS)
    devices = {d.name: d for d in scenario.devices}
    supernode_of = scale_up_domains(scenario)
    checked: set[tuple[str, str]] = set()
    for a, b in talking_pairs(plan):
        here, there = plan.ranks[a], plan.ranks[b]
        joined = {supernode_of.get((place.device, place.gpu)) for place in (here, there)}
        if here.device == there.device or (len(joined) == 1 and None not in joined):
            continue
        ends = []  # OLink does not join them: they talk through their NICs
        for place, rank in ((here, a), (there, b)):
            ports = nic_ports_of(devices[place.device], place.gpu)
            ends.append(Endpoint(place.device, ports[0]) if ports else None)
            if ports == () or context.link_at(Endpoint(place.device, ports[0])) is None:
                outside = " outside its supernode" if (place.device, place.gpu) in supernode_of else ""
                raise KeyProblem(where, (
                    f"rank {rank} on {place.device} GPU {place.gpu} talks to another server{outside}, but that GPU "
                    f"has no linked NIC port; link one, join the servers in one supernode, or place the ranks "
                    f"that talk together"))
        pair = (here.device, there.device)
        if pair in checked:
            continue
        checked.add(pair)
        near, far = ends
        assert near is not None and far is not None
        if not context.path_links(near, far):
            raise KeyProblem(where, (
                f"rank {a} on {here.device} talks to rank {b} on {there.device}, but neither one supernode nor "
                f"a path between their NICs joins them; link the servers through switches, or place those "
                f"ranks together"))


def talking_pairs(plan: JobPlan) -> set[tuple[int, int]]:
    """(rank, rank) pairs the programs make exchange messages: p2p peers, ring neighbours, and every
    pair of an all-to-all."""
    pairs: set[tuple[int, int]] = set()
    for rank, program in enumerate(plan.programs):
        for op in program:
            if op.peer >= 0:
                pairs.add((rank, op.peer))
            elif op.group >= 0:
                members = plan.groups[op.group]
                if op.collective == ALL_TO_ALL:
                    pairs.update((rank, m) for m in members if m != rank)
                else:
                    pairs.update(zip(members, members[1:] + members[:1], strict=True))
    return pairs


def _round_up(ps: int) -> int:
    """``ps`` rounded up to two significant digits: 246,411,999 -> 250,000,000."""
    scale = 10 ** max(0, len(str(ps)) - 2)
    return -(-ps // scale) * scale


def _time_text(ps: int) -> str:
    """A whole number of picoseconds as a scenario writes it, in the largest unit that keeps it whole: "200us"."""
    for scale, unit in ((10**12, "s"), (10**9, "ms"), (10**6, "us"), (10**3, "ns")):
        if ps % scale == 0:
            return f"{ps // scale}{unit}"
    return f"{ps}ps"
