"""Collective tests: one collective (or an incast) over a set of GPUs, repeated, the way
communication benchmarks measure a scale-up or scale-out fabric without a model around it.

The ``collective_test:`` block of a scenario becomes a job plan whose every iteration is that one
operation, so the GPU servers run it like any job and results.json reports it under ``job``, with
the algorithm and bus bandwidths benchmarks print (``collective_test`` in the job's ``info``):

- algorithm bandwidth = bytes / time (incast: all senders' bytes / time);
- bus bandwidth = algorithm bandwidth x 2(n-1)/n for all-reduce, x (n-1)/n for reduce-scatter,
  all-gather and all-to-all, x 1 for incast: what each GPU's link carried, comparable across n.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from emulators.model.job import (
    ALL_GATHER,
    ALL_REDUCE,
    ALL_TO_ALL,
    COLLECTIVE,
    RECV,
    REDUCE_SCATTER,
    SEND,
    TP,
    JobPlan,
    Op,
    RankPlace,
)
from emulators.model.scenario import DeviceSpec
from orchestrator.workload.hardware import GPU_SERVER_KIND, gpus_of
from orchestrator.workload.job import JobError, transport_fields
from orchestrator.workload.placement import natural

INCAST = "incast"
OPERATIONS = (ALL_REDUCE, REDUCE_SCATTER, ALL_GATHER, ALL_TO_ALL, INCAST)
BUS_FACTOR = {ALL_REDUCE: lambda n: 2 * (n - 1) / n, REDUCE_SCATTER: lambda n: (n - 1) / n,
              ALL_GATHER: lambda n: (n - 1) / n, ALL_TO_ALL: lambda n: (n - 1) / n, INCAST: lambda n: 1.0}


def build_collective_test(spec: Mapping[str, Any], devices: Sequence[DeviceSpec]) -> JobPlan:
    """The plan of a schema-valid ``collective_test`` block (sizes in bytes, times in ps)."""
    places = _gpus(spec.get("gpus"), devices)
    n = len(places)
    if n < 2:
        raise JobError(("gpus",), f"{n} GPU; a collective test needs at least 2")
    operation, nbytes = spec["op"], int(spec["bytes"])
    if operation == INCAST:
        programs = [tuple(Op(RECV, f"from{k}", peer=k, nbytes=nbytes, dim=TP, label="recv") for k in range(1, n))]
        programs += [(Op(SEND, "send", peer=0, nbytes=nbytes, dim=TP, label="send"),)] * (n - 1)
        groups: tuple[tuple[int, ...], ...] = ()
        moved = (n - 1) * nbytes
    else:
        op = Op(COLLECTIVE, "comm", collective=operation, group=0, cid=0, nbytes=nbytes, dim=TP, label=operation)
        programs = [(op,)] * n
        groups = (tuple(range(n)),)
        moved = nbytes
    return JobPlan(
        model=f"collective-test:{operation}",
        parallel={"tp": n, "pp": 1, "dp": 1, "ep": 1},
        ranks=tuple(places),
        groups=groups,
        programs=tuple(programs),
        iterations=int(spec.get("iterations", 1)),
        tokens_per_iteration=0,
        flops_per_iteration=0,
        start_ps=int(spec.get("start", 0)),
        detect_ps=int(spec.get("detect", 1_000_000_000_000)),
        restart=False,
        **transport_fields(spec),
        info={"collective_test": {"op": operation, "bytes": nbytes, "gpus": n, "moved_bytes": moved,
                                  "bus_factor": BUS_FACTOR[operation](n)}},
    )


def bandwidths(info: Mapping[str, Any], time_ps: int) -> dict[str, float]:
    """Algorithm and bus bandwidth (bit/s) of one iteration of a collective test that took ``time_ps``."""
    if time_ps <= 0:
        return {"algbw_bps": 0.0, "busbw_bps": 0.0}
    algbw = info["moved_bytes"] * 8e12 / time_ps
    return {"algbw_bps": algbw, "busbw_bps": algbw * info["bus_factor"]}


def _gpus(chosen: Sequence[str] | None, devices: Sequence[DeviceSpec]) -> list[RankPlace]:
    """The GPUs of the test, in rank order: as listed (``server`` for all of its GPUs, ``server/g``
    for one), or every GPU of every GPU server, servers in natural name order."""
    servers = {d.name: d for d in devices if d.kind == GPU_SERVER_KIND}
    if chosen is None:
        return [RankPlace(name, g) for name in sorted(servers, key=natural) for g in range(gpus_of(servers[name]))]
    places: list[RankPlace] = []
    for index, entry in enumerate(chosen):
        name, _, gpu = entry.partition("/")
        server = servers.get(name)
        if server is None:
            raise JobError(("gpus", index), f"no GPU server {name!r}; GPU servers: {', '.join(sorted(servers))}")
        if not gpu:
            places.extend(RankPlace(name, g) for g in range(gpus_of(server)))
            continue
        if not gpu.isdigit() or int(gpu) >= gpus_of(server):
            raise JobError(("gpus", index), f"{entry!r}: {name} has GPUs 0 to {gpus_of(server) - 1}")
        places.append(RankPlace(name, int(gpu)))
    seen: set[RankPlace] = set()
    for index, place in enumerate(places):
        if place in seen:
            raise JobError(("gpus",), f"GPU {place.device}/{place.gpu} is listed twice (entry {index})")
        seen.add(place)
    return places
