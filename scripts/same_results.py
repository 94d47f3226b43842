"""Prove a refactor changed no result: run every scenario under scenarios/ and compare what it wrote
outside ``run`` (the part of results.json that depends only on the scenario and the seed) with a
reference saved before the change.

    python scripts/same_results.py save  REF_DIR   # before the change (e.g. in a clone of main)
    python scripts/same_results.py check REF_DIR   # after: exit 1 and name every scenario that differs

Each scenario runs in-process (single partition) in its own OS process, ``--jobs`` at a time, named by
its path relative to the checkout (results.json keeps it as ``scenario.source``), so two checkouts compare.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def scenarios(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in (root / "scenarios").rglob("*.yaml"))


def deterministic_text(results_json: Path) -> str:
    """results.json without its ``run`` section, written as the testbed writes results.json."""
    results = json.loads(results_json.read_text())
    results.pop("run", None)
    return json.dumps(results, indent=1, sort_keys=False, allow_nan=False) + "\n"


def run_one(scenario: Path, out: Path) -> tuple[Path, str | None, float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "gen")]))  # this checkout's code
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(scenario), "--out", str(out),
                           "--force", "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    results = out / "results.json"
    if not results.is_file():
        return scenario, f"no results.json (exit {done.returncode}): {done.stderr.strip()[-400:]}", took
    return scenario, None, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["save", "check"])
    parser.add_argument("reference", type=Path, help="directory of the saved deterministic results")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", nargs="*", default=None, help="scenario paths (default: every one)")
    args = parser.parse_args()
    reference: Path = args.reference.resolve()
    reference.mkdir(parents=True, exist_ok=True)
    timings_file = reference / "timings.json"
    timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    chosen = [Path(p) for p in args.only] if args.only else scenarios(ROOT)
    chosen.sort(key=lambda s: -timings.get(str(s), 0.0))  # the longest first: the pool ends sooner
    failures = 0
    with tempfile.TemporaryDirectory(prefix="same-results-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        jobs = [pool.submit(run_one, s, Path(tmp) / str(s).replace("/", "__")) for s in chosen]
        for job in jobs:
            scenario, error, took = job.result()
            key = str(scenario).replace("/", "__").removesuffix(".yaml") + ".json"
            if error is not None:
                print(f"FAIL  {scenario}: {error}")
                failures += 1
                continue
            text = deterministic_text(Path(tmp) / str(scenario).replace("/", "__") / "results.json")
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            saved = reference / key
            timings[str(scenario)] = round(took, 1)
            if args.action == "save":
                saved.write_text(text)
                print(f"saved {scenario} {digest} ({took:.1f} s)")
            elif not saved.is_file():
                print(f"NEW   {scenario}: no reference")
                failures += 1
            elif saved.read_text() != text:
                diff = difflib.unified_diff(saved.read_text().splitlines(), text.splitlines(), "reference", "now",
                                            lineterm="", n=1)
                print(f"DIFF  {scenario}:\n" + "\n".join(list(diff)[:20]))
                failures += 1
            else:
                print(f"same  {scenario} {digest} ({took:.1f} s)")
    if args.action == "save":
        timings_file.write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n")
    print(f"{len(chosen) - failures} of {len(chosen)} scenarios {'saved' if args.action == 'save' else 'identical'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
