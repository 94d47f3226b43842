"""``python -m orchestrator.bench [--quick]``: how fast the testbed runs, as a table and as JSON.

Three groups of figures:

1. kernel: events per second of one process running a synthetic tester scenario (partition single,
   backend inproc), next to a bare engine whose only handler reschedules itself — the floor the
   kernel sets under any device model;
2. windows: windows per second of the process backend for 2, 4, 8 and 16 hosts (one tester per
   host in a ring of 1 km links, so a 4.9 us lookahead, with a light flow on every link);
3. default: wall seconds per virtual second of scenarios/testers.yaml in every partition on both
   backends;
4. fabric: events per second and wall seconds per virtual millisecond of the permutation experiment
   on a leaf/spine fabric in RoCE and in GSE mode (partition single);
5. wan: wall seconds per virtual second of scenarios/wan/bulk-300km.yaml (two sites, 300 km, 2 x 400G
   clients) in the single and site partitions on both backends, with windows, and whether the
   results are identical;
6. job: wall seconds per emulated training iteration, next to the iteration's virtual time, of the
   Trial A baseline (32 GPUs, LLaMA-2 13B, TP 4 PP 2 DP 4) and of the default two-site scenario, in
   the single and site partitions (backend inproc), with events per second;
7. supernode: events per second and wall seconds per emulated second of a TP-heavy job on a 64-GPU
   supernode (scenarios/supernode/tp-heavy-64.yaml, one iteration, every TP and DP all-reduce frame
   by frame through the OLink switch) at the default 64 KiB OLink chunk and at 256 KiB.

Wall time is measured here with ``time.perf_counter`` only; the emulation itself runs on virtual
time. The figures are also written to ``out/bench/bench.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from emulators.kernel.engine import Engine
from emulators.kernel.vtime import PS_PER_MS, PS_PER_S, PS_PER_US
from emulators.model.scenario import DeviceSpec, Endpoint, FlowSpec, LinkSpec, Scenario
from emulators.rdma.settings import NicSettings
from orchestrator.partition import PARTITIONS
from orchestrator.results import deterministic_view
from orchestrator.run import BACKENDS, run_scenario
from orchestrator.scenario.loader import load_scenario
from services.logs import configure_logging

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIO = Path("scenarios/testers.yaml")  # relative to REPO
WAN_SCENARIO = Path("scenarios/wan/bulk-300km.yaml")
JOB_SCENARIOS = (Path("scenarios/trial-a/baseline.yaml"), Path("scenarios/default.yaml"))
SUPERNODE_SCENARIO = Path("scenarios/supernode/tp-heavy-64.yaml")
QUICK_SUPERNODE_SCENARIO = Path("scenarios/supernode/ring-allreduce.yaml")
FABRIC_SCENARIOS = (Path("scenarios/fabric/permutation-roce.yaml"), Path("scenarios/fabric/permutation-gse.yaml"))
OUT_DIR = Path("out/bench")  # relative to the working directory, like ``testbed run --out``
GBPS = 1_000_000_000
LINK_RATE_BPS = 400 * GBPS
KIB = 1024


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does: the full run, or a quick smoke run."""

    bare_events: int  # events the bare engine processes
    kernel_pairs: int  # tester pairs of the kernel scenario (two testers, one link, a flow each way)
    kernel_duration_ps: int
    window_hosts: tuple[int, ...]
    window_duration_ps: int  # ~2,000 windows: about 20 s of coordinator loop at 16 hosts on 2 cores
    default_duration_ps: int | None  # None: the scenario file's own duration
    fabric_duration_ps: int | None
    fabric_seeds: tuple[int, ...]
    wan_duration_ps: int | None
    job_iterations: int | None  # None: the scenario's own
    supernode_chunks: tuple[int, ...]  # OLink chunks the supernode job runs with


FULL = Sizes(bare_events=2_000_000, kernel_pairs=8, kernel_duration_ps=10 * PS_PER_MS,
             window_hosts=(2, 4, 8, 16), window_duration_ps=10 * PS_PER_MS, default_duration_ps=None,
             fabric_duration_ps=None, fabric_seeds=(1, 2, 3, 4, 5),
             wan_duration_ps=None, job_iterations=None, supernode_chunks=(64 * KIB, 256 * KIB))
QUICK = Sizes(bare_events=100_000, kernel_pairs=2, kernel_duration_ps=1 * PS_PER_MS,
              window_hosts=(2,), window_duration_ps=1 * PS_PER_MS, default_duration_ps=PS_PER_MS,
              fabric_duration_ps=100 * PS_PER_US, fabric_seeds=(1,),
              wan_duration_ps=2 * PS_PER_MS, job_iterations=1, supernode_chunks=(256 * KIB,))


# -- scenarios built in code ----------------------------------------------------------------------
def _flow(name: str, src: Endpoint, dst: Endpoint, rate_bps: int, frame_bytes: int,
          duration_ps: int, start_ps: int = 0) -> FlowSpec:
    """A flow that keeps sending at ``rate_bps`` from ``start_ps`` until the run's end."""
    count = -(-(duration_ps - start_ps) * rate_bps // (frame_bytes * 8 * PS_PER_S))
    return FlowSpec(name, src, dst, rate_bps, frame_bytes, start_ps, count)


def pairs_scenario(pairs: int, duration_ps: int) -> Scenario:
    """Testers in pairs on 400G links of 100 m, each direction kept busy by 64 KiB frames."""
    devices: list[DeviceSpec] = []
    links: list[LinkSpec] = []
    flows: list[FlowSpec] = []
    for i in range(pairs):
        a, z = Endpoint(f"t{2 * i:02d}", "p0"), Endpoint(f"t{2 * i + 1:02d}", "p0")
        devices += [DeviceSpec(a.device, "tester", None, ("p0",)), DeviceSpec(z.device, "tester", None, ("p0",))]
        links.append(LinkSpec(f"l{i:02d}", a, z, LINK_RATE_BPS, 100_000))
        flows.append(_flow(f"f{i:02d}-az", a, z, 390 * GBPS, 64 * KIB, duration_ps))
        flows.append(_flow(f"f{i:02d}-za", z, a, 390 * GBPS, 64 * KIB, duration_ps))
    return Scenario(name=f"bench-pairs-{pairs}", source="<bench>", seed=1, duration_ps=duration_ps,
                    sample_interval_ps=PS_PER_MS, sites=(), devices=tuple(devices), links=tuple(links),
                    flows=tuple(flows), faults=())


def ring_scenario(hosts: int, duration_ps: int) -> Scenario:
    """``hosts`` testers in a ring of 1 km links, a light 4 KiB flow on each link (staggered starts)."""
    names = [f"t{i:02d}" for i in range(hosts)]
    devices = tuple(DeviceSpec(n, "tester", None, ("east", "west")) for n in names)
    links: list[LinkSpec] = []
    flows: list[FlowSpec] = []
    for i, name in enumerate(names):
        src, dst = Endpoint(name, "east"), Endpoint(names[(i + 1) % hosts], "west")
        links.append(LinkSpec(f"l{i:02d}", src, dst, LINK_RATE_BPS, 1_000_000))
        start = i * 500_000  # 0.5 us apart: the hosts do not all send in the same window
        flows.append(_flow(f"f{i:02d}", src, dst, 8 * GBPS, 4 * KIB, duration_ps, start_ps=start))
    return Scenario(name=f"bench-ring-{hosts}", source="<bench>", seed=1, duration_ps=duration_ps,
                    sample_interval_ps=PS_PER_MS, sites=(), devices=devices, links=tuple(links),
                    flows=tuple(flows), faults=())


def load_default(duration_ps: int | None, path: Path = DEFAULT_SCENARIO) -> Scenario:
    scenario = load_scenario(REPO / path)
    return scenario if duration_ps is None else replace(scenario, duration_ps=duration_ps)


# -- measurements ---------------------------------------------------------------------------------
def bench_bare_engine(events: int, chains: int = 16) -> dict[str, Any]:
    """Events per second of the engine alone: ``chains`` handlers, each rescheduling itself 1 ns on."""
    engine = Engine()
    seq = itertools.count()

    def tick(origin: int) -> None:
        engine.schedule(engine.now + 1000, origin, next(seq), tick, origin)

    for origin in range(chains):
        engine.schedule(origin, origin, next(seq), tick, origin)
    end_ps = events // chains * 1000
    t0 = time.perf_counter()
    n = engine.run_until(end_ps)
    wall = time.perf_counter() - t0
    return {"events": n, "wall_seconds": wall, "events_per_s": n / wall}


def run_figures(scenario: Scenario, partition: str, backend: str, label: str) -> dict[str, Any]:
    """Run one scenario and keep the figures the tables need.

    ``wall_seconds`` is the coordinator loop only; ``total_seconds`` also counts building or
    starting the hosts, collecting results and stopping the hosts.
    """
    t0 = time.perf_counter()
    results = run_scenario(scenario, partition, backend, OUT_DIR / "runs" / label)
    total = time.perf_counter() - t0
    run = results["run"]
    wall = float(run["wall_seconds"])
    virtual_s = results["virtual_end_ps"] / PS_PER_S
    return {
        "scenario": scenario.name, "partition": partition, "backend": backend,
        "hosts": len(run["hosts"]), "lookahead_ps": run["lookahead_ps"],
        "events": results["events"], "windows": run["windows"], "wall_seconds": wall,
        "total_seconds": total, "virtual_seconds": virtual_s,
        "events_per_s": results["events"] / wall if wall > 0 else 0.0,
        "windows_per_s": run["windows"] / wall if wall > 0 else 0.0,
        "wall_per_virtual_s": wall / virtual_s if virtual_s > 0 else 0.0,
    }


def bench_kernel(sizes: Sizes) -> dict[str, Any]:
    scenario = pairs_scenario(sizes.kernel_pairs, sizes.kernel_duration_ps)
    return run_figures(scenario, "single", "inproc", "kernel")


def bench_windows(sizes: Sizes) -> list[dict[str, Any]]:
    return [run_figures(ring_scenario(n, sizes.window_duration_ps), "device", "process", f"windows-{n}")
            for n in sizes.window_hosts]


def bench_default(scenario: Scenario) -> list[dict[str, Any]]:
    return [run_figures(scenario, partition, backend, f"default-{partition}-{backend}")
            for partition in PARTITIONS for backend in BACKENDS]


def bench_fabric(scenarios: list[Scenario], seeds: tuple[int, ...]) -> list[dict[str, Any]]:
    """Each permutation scenario once per seed: speed, and the aggregate throughput it reached."""
    rows = []
    for scenario in scenarios:
        for seed in seeds:
            seeded = replace(scenario, seed=seed)
            row = run_figures(seeded, "single", "inproc", f"fabric-{scenario.name}-{seed}")
            row["seed"] = seed
            results = json.loads((OUT_DIR / "runs" / f"fabric-{scenario.name}-{seed}" / "results.json").read_text())
            flows = [f for f in results["flows"].values() if f.get("transport") == "rdma"]
            row["share_of_ideal"] = permutation_share(flows)
            # the traffic's own span: the run's tail after the last completion costs no wall time
            row["active_seconds"] = max((f["last_rx_ps"] for f in flows), default=0) / PS_PER_S
            rows.append(row)
    return rows


def permutation_share(flows: list[dict[str, Any]]) -> float:
    """Aggregate throughput of the permutation flows (sum of each flow's delivery rate) over the
    ideal of a non-blocking fabric: every flow at line rate minus RoCEv2 headers."""
    share = NicSettings().goodput_fraction()
    return sum(f["rx_goodput_bps"] for f in flows) / (len(flows) * LINK_RATE_BPS * share) if flows else 0.0


def bench_wan(scenario: Scenario) -> list[dict[str, Any]]:
    rows = []
    reference: dict[str, Any] | None = None
    for partition in ("single", "site"):
        for backend in BACKENDS:
            label = f"wan-{partition}-{backend}"
            row = run_figures(scenario, partition, backend, label)
            view = deterministic_view(json.loads((OUT_DIR / "runs" / label / "results.json").read_text()))
            reference = reference if reference is not None else view
            row["identical"] = view == reference
            rows.append(row)
    return rows


def bench_job(scenarios: list[Scenario]) -> list[dict[str, Any]]:
    rows = []
    for scenario in scenarios:
        reference: dict[str, Any] | None = None
        for partition in ("single", "site"):
            label = f"job-{scenario.name}-{partition}"
            row = run_figures(scenario, partition, "inproc", label)
            results = json.loads((OUT_DIR / "runs" / label / "results.json").read_text())
            view = deterministic_view(results)
            reference = reference if reference is not None else view
            job = results["job"]
            done = len(job["iterations"])
            row.update(iterations=done, iteration_seconds=(job["iteration_time_ps"] or 0) / PS_PER_S,
                       wall_per_iteration=row["wall_seconds"] / done if done else 0.0, identical=view == reference)
            rows.append(row)
    return rows


def bench_supernode(scenario: Scenario, chunks: tuple[int, ...]) -> list[dict[str, Any]]:
    """The supernode job at each OLink chunk: wall seconds per emulated second of the job (its
    iterations' span, not the idle rest of the scenario's duration)."""
    rows = []
    for chunk in chunks:
        devices = tuple(
            replace(d, options=d.options | {"olink": d.options.get("olink", {}) | {"chunk": chunk}})
            if d.kind == "gpu_server" else d for d in scenario.devices)
        label = f"supernode-{scenario.name}-{chunk // KIB}k"
        row = run_figures(replace(scenario, devices=devices), "single", "inproc", label)
        results = json.loads((OUT_DIR / "runs" / label / "results.json").read_text())
        job = results["job"]
        span_s = (job["iterations"][-1]["end_ps"] if job["iterations"] else 0) / PS_PER_S
        row.update(chunk=chunk, iteration_seconds=(job["iteration_time_ps"] or 0) / PS_PER_S, job_seconds=span_s,
                   wall_per_job_s=row["wall_seconds"] / span_s if span_s else 0.0)
        rows.append(row)
    return rows


def with_iterations(scenario: Scenario, iterations: int | None) -> Scenario:
    if iterations is None or scenario.job is None:
        return scenario
    return replace(scenario, job=replace(scenario.job, iterations=iterations))


# -- output ---------------------------------------------------------------------------------------
Column = tuple[str, str, Callable[[dict[str, Any]], Any]]  # header, format spec ("" = text), value
NOTE_WALL = ("wall s: coordinator loop only, host start-up excluded; "
             "total s: whole run, start-up and shut-down included")


def table(title: str, columns: list[Column], rows: Iterable[dict[str, Any]]) -> str:
    """Text columns left-aligned, numbers right-aligned, two spaces apart."""
    cells = [[format(get(row), spec) for _, spec, get in columns] for row in rows]
    widths = [max([len(head)] + [len(c[i]) for c in cells]) for i, (head, _, _) in enumerate(columns)]
    texts = [spec == "" for _, spec, _ in columns]

    def line(values: list[str]) -> str:
        return "  " + "  ".join(v.ljust(w) if text else v.rjust(w)
                                for v, w, text in zip(values, widths, texts, strict=True)).rstrip()

    return "\n".join([title, line([head for head, _, _ in columns]), *(line(c) for c in cells)])


def kernel_table(kernel: dict[str, Any], bare: dict[str, Any]) -> str:
    rows = [dict(kernel, what=f"tester model: {kernel['scenario']}"),
            dict(bare, what="bare engine: handlers rescheduling themselves")]
    return table("1. Kernel events per second, one process (partition single, backend inproc)", [
        ("run", "", lambda r: r["what"]),
        ("events", ",", lambda r: r["events"]),
        ("wall s", ".3f", lambda r: r["wall_seconds"]),
        ("events/s", ",.0f", lambda r: r["events_per_s"]),
    ], rows)


def windows_table(rows: list[dict[str, Any]]) -> str:
    return table("2. Windows per second, process backend: one tester per host, ring of 1 km links\n"
                 f"   ({NOTE_WALL})", [
        ("hosts", "d", lambda r: r["hosts"]),
        ("lookahead us", ".2f", lambda r: r["lookahead_ps"] / PS_PER_US),
        ("virtual ms", ".1f", lambda r: r["virtual_seconds"] * 1000),
        ("windows", ",", lambda r: r["windows"]),
        ("wall s", ".3f", lambda r: r["wall_seconds"]),
        ("windows/s", ",.0f", lambda r: r["windows_per_s"]),
        ("total s", ".1f", lambda r: r["total_seconds"]),
    ], rows)


def default_table(rows: list[dict[str, Any]]) -> str:
    virtual_ms = rows[0]["virtual_seconds"] * 1000 if rows else 0.0
    return table(f"3. Wall seconds per virtual second: {DEFAULT_SCENARIO} ({virtual_ms:g} ms virtual)\n"
                 f"   ({NOTE_WALL})", [
        ("partition", "", lambda r: r["partition"]),
        ("backend", "", lambda r: r["backend"]),
        ("hosts", "d", lambda r: r["hosts"]),
        ("windows", ",", lambda r: r["windows"]),
        ("events", ",", lambda r: r["events"]),
        ("wall s", ".3f", lambda r: r["wall_seconds"]),
        ("wall s / virtual s", ",.1f", lambda r: r["wall_per_virtual_s"]),
        ("events/s", ",.0f", lambda r: r["events_per_s"]),
        ("total s", ".1f", lambda r: r["total_seconds"]),
    ], rows)


def fabric_table(rows: list[dict[str, Any]]) -> str:
    return table("4. Permutation traffic on a 16-server leaf/spine fabric, partition single, backend inproc\n"
                 "   (share: aggregate throughput over ideal line rate minus headers; traffic ms: virtual time\n"
                 "   until the last byte arrived)", [
        ("scenario", "", lambda r: r["scenario"]),
        ("seed", "d", lambda r: r["seed"]),
        ("share", ".3f", lambda r: r["share_of_ideal"]),
        ("traffic ms", ".3f", lambda r: r["active_seconds"] * 1000),
        ("events", ",", lambda r: r["events"]),
        ("wall s", ".3f", lambda r: r["wall_seconds"]),
        ("events/s", ",.0f", lambda r: r["events_per_s"]),
        ("wall s / traffic ms", ".3f",
         lambda r: r["wall_seconds"] / (r["active_seconds"] * 1000) if r["active_seconds"] else 0.0),
    ], rows)


def wan_table(rows: list[dict[str, Any]]) -> str:
    virtual_ms = rows[0]["virtual_seconds"] * 1000 if rows else 0.0
    return table(f"5. Wall seconds per virtual second: {WAN_SCENARIO} ({virtual_ms:g} ms virtual)\n"
                 f"   ({NOTE_WALL}; identical: results equal those of the first row)", [
        ("partition", "", lambda r: r["partition"]),
        ("backend", "", lambda r: r["backend"]),
        ("hosts", "d", lambda r: r["hosts"]),
        ("lookahead ms", ".3f", lambda r: (r["lookahead_ps"] or 0) / PS_PER_MS),
        ("windows", ",", lambda r: r["windows"]),
        ("events", ",", lambda r: r["events"]),
        ("wall s", ".3f", lambda r: r["wall_seconds"]),
        ("wall s / virtual s", ",.1f", lambda r: r["wall_per_virtual_s"]),
        ("identical", "", lambda r: "yes" if r["identical"] else "NO"),
    ], rows)


def job_table(rows: list[dict[str, Any]]) -> str:
    return table("6. Training jobs: wall seconds per emulated iteration, backend inproc\n"
                 f"   ({NOTE_WALL}; identical: results equal those of the single partition)", [
        ("scenario", "", lambda r: r["scenario"]),
        ("partition", "", lambda r: r["partition"]),
        ("hosts", "d", lambda r: r["hosts"]),
        ("iterations", "d", lambda r: r["iterations"]),
        ("iteration s (virtual)", ".3f", lambda r: r["iteration_seconds"]),
        ("wall s / iteration", ".2f", lambda r: r["wall_per_iteration"]),
        ("events", ",", lambda r: r["events"]),
        ("events/s", ",.0f", lambda r: r["events_per_s"]),
        ("identical", "", lambda r: "yes" if r["identical"] else "NO"),
    ], rows)


def supernode_table(rows: list[dict[str, Any]]) -> str:
    return table("7. Supernode: a TP-heavy job frame by frame through OLink, partition single, backend inproc\n"
                 "   (wall s / job s: coordinator wall seconds per emulated second of the job's iterations)", [
        ("scenario", "", lambda r: r["scenario"]),
        ("OLink chunk", "", lambda r: f"{r['chunk'] // KIB} KiB"),
        ("iteration s (virtual)", ".4f", lambda r: r["iteration_seconds"]),
        ("wall s", ".1f", lambda r: r["wall_seconds"]),
        ("wall s / job s", ",.0f", lambda r: r["wall_per_job_s"]),
        ("events", ",", lambda r: r["events"]),
        ("events/s", ",.0f", lambda r: r["events_per_s"]),
    ], rows)


def report(figures: dict[str, Any]) -> str:
    return "\n\n".join([kernel_table(figures["kernel"], figures["bare_engine"]),
                        windows_table(figures["windows"]), default_table(figures["default"]),
                        fabric_table(figures["fabric"]), wan_table(figures["wan"]), job_table(figures["job"]),
                        supernode_table(figures["supernode"])])


def write_json(figures: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / "bench.json"
    path.write_text(json.dumps(figures, indent=1) + "\n")
    return path


def collect(sizes: Sizes, quick: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    default = load_default(sizes.default_duration_ps)  # first: a bad file fails before any run
    fabric = [load_default(sizes.fabric_duration_ps, path) for path in FABRIC_SCENARIOS]
    wan = load_default(sizes.wan_duration_ps, WAN_SCENARIO)
    jobs = [with_iterations(load_default(None, path), sizes.job_iterations) for path in JOB_SCENARIOS]
    supernode = with_iterations(load_default(None, QUICK_SUPERNODE_SCENARIO if quick else SUPERNODE_SCENARIO), 1)
    figures: dict[str, Any] = {
        "quick": quick,
        "bare_engine": bench_bare_engine(sizes.bare_events),
        "kernel": bench_kernel(sizes),
        "windows": bench_windows(sizes),
        "default": bench_default(default),
        "fabric": bench_fabric(fabric, sizes.fabric_seeds),
        "wan": bench_wan(wan),
        "job": bench_job(jobs),
        "supernode": bench_supernode(supernode, sizes.supernode_chunks),
    }
    figures["total_wall_seconds"] = time.perf_counter() - t0
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.bench",
                                     description="Print the kernel, window and wall-time figures.")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: a smoke run of a few seconds")
    args = parser.parse_args(argv)
    configure_logging("error")
    try:
        figures = collect(QUICK if args.quick else FULL, args.quick)
    except ImportError as e:
        print(f"error: {e} (generated gRPC stubs missing? run `make install`)", file=sys.stderr)
        return 1
    except Exception as e:  # one line, not a traceback: the bench is run by hand
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(report(figures))
    print(f"\ntotal {figures['total_wall_seconds']:.1f} s wall; figures: {write_json(figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
