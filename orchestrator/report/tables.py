"""CSV files beside the report: every sample, unthinned, in long form for pandas, R or a spreadsheet.

Rows are written as preformatted text rather than through ``csv.writer``: a run with 40 devices and
10k samples has millions of rows, and only device, counter and link names could ever need quoting,
so they are quoted (when needed) once per series instead of once per row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.report.data import LinkLoad

TIMESERIES_COLUMNS = ("t_ps", "device", "counter", "value")
LINK_COLUMNS = ("t_ps", "link", "direction", "utilisation")
ITERATION_COLUMNS = ("iteration", "attempt", "start_ps", "end_ps", "time_ps")


def write_timeseries(results: dict[str, Any], path: Path) -> Path:
    """Every sampled counter of every device: one row per (sample, device, counter)."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(",".join(TIMESERIES_COLUMNS) + "\n")
        for device, sampled in results.get("timeseries", {}).items():
            times = [str(t) for t in sampled.get("t_ps", [])]
            for counter in sorted(sampled):
                if counter == "t_ps":
                    continue
                middle = f",{_field(device)},{_field(counter)},"
                out.write("".join([f"{t}{middle}{value}\n" for t, value in zip(times, sampled[counter], strict=True)]))
    return path


def write_links(loads: list[LinkLoad], path: Path) -> Path:
    """Utilisation of each link direction over each sample interval, stamped at the interval's end."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(",".join(LINK_COLUMNS) + "\n")
        for load in loads:
            middle = f",{_field(load.link)},{load.direction},"
            ends = load.edges_ps[1:].tolist()
            out.write("".join([f"{t}{middle}{u:.6g}\n" for t, u in zip(ends, load.utilisation.tolist(), strict=True)]))
    return path


def write_iterations(job: dict[str, Any], path: Path) -> Path:
    """Each attempt at each iteration (a retried iteration appears once per attempt)."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(",".join(ITERATION_COLUMNS) + "\n")
        for it in job.get("iterations", []):
            out.write(",".join(str(it.get(column, "")) for column in ITERATION_COLUMNS) + "\n")
    return path


def _field(text: str) -> str:
    """A name as a CSV field: quoted only in the unlikely case that it needs it."""
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text
