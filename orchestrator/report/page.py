"""report.html: one self-contained page (inline CSS, PNGs as data URIs), readable offline and by mail."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from emulators.model.units import format_bytes, format_time
from orchestrator.report import data
from orchestrator.report.plots import Plot

MAX_EVENT_ROWS = 200  # a flapping link can log thousands of QP events; the JSON keeps them all

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
img { max-width: 100%; } .note { color: #666; font-style: italic; }
"""


# -- headline -------------------------------------------------------------------------------------
def headline(results: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures a reader checks first, as (label, formatted value)."""
    scenario = results.get("scenario", {})
    run = results.get("run", {})
    status = str(results.get("status", "?"))
    if results.get("error"):
        status += f": {results['error']}"
    lost = data.frames_lost(results)
    lost_text = f"{sum(lost.values()):,}"
    if lost:
        lost_text += " (" + ", ".join(f"{count:,} {label}" for label, count in lost.items()) + ")"
    rows = [
        ("scenario", f"{scenario.get('name', '?')} (seed {scenario.get('seed', '?')})"),
        ("status", status),
        ("virtual end", format_time(int(results.get("virtual_end_ps", 0)))),
        ("events", f"{int(results.get('events', 0)):,}"),
        ("wall seconds", f"{float(run.get('wall_seconds', 0.0)):.2f} s"),
        ("frames lost", lost_text),
        ("retransmitted bytes", format_bytes(data.retransmitted_bytes(results))),
    ]
    job = results.get("job")
    return rows + (_job_headline(job) if job else [])


def _job_headline(job: dict[str, Any]) -> list[tuple[str, str]]:
    parallel = job.get("parallel", {})
    layout = " ".join(f"{dim}={parallel[dim]}" for dim in ("tp", "pp", "dp", "ep") if dim in parallel)
    done = len({it["iteration"] for it in job.get("iterations", [])})
    rows = [
        ("training job", f"{job.get('model', '?')}, {job.get('gpus', '?')} GPUs ({layout})"),
        ("job status", f"{job.get('status', '?')}, {done} of {job.get('iterations_planned', '?')} iterations"),
    ]
    if job.get("iteration_time_ps") is not None:
        text = format_time(int(job["iteration_time_ps"]))
        estimate = (job.get("estimate") or {}).get("iteration_time_ps")
        rows.append(("iteration time", text + (f" (estimate {format_time(int(estimate))})" if estimate else "")))
    worst = job.get("worst_iteration")
    if worst and (job.get("faults") or worst.get("causes")):  # a run with faults leads with what they cost
        text = f"iteration {worst['iteration']}: {format_time(int(worst['time_ps']))}"
        if worst.get("cost_ps") is not None:
            text += f", {_signed(int(worst['cost_ps']))} against the {job.get('reference')}"
        if worst.get("equivalent_compute") is not None:
            text += f", equivalent compute {float(worst['equivalent_compute']):.3f}"
        rows.append(("worst iteration", text + (f" ({'; '.join(worst['causes'])})" if worst.get("causes") else "")))
    if job.get("equivalent_compute") is not None:
        rows.append(("equivalent compute (median)", f"{float(job['equivalent_compute']):.3f}"))
    if job.get("tokens_per_gpu_per_s") is not None:
        rows.append(("tokens per GPU per second", f"{float(job['tokens_per_gpu_per_s']):,.1f}"))
    if job.get("communication_share") is not None:
        rows.append(("communication share", f"{float(job['communication_share']):.1%}"))
    if job.get("exposed_communication_ps") is not None:
        rows.append(("exposed communication", format_time(int(job["exposed_communication_ps"]))))
    rows.append(("job interruptions", str(len(job.get("interruptions") or []))))
    rows.append(("time lost", format_time(int(job.get("lost_ps") or 0))))
    return rows


def _signed(ps: int) -> str:
    return ("+" if ps >= 0 else "-") + format_time(abs(ps))


# -- event tables ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]


def _rows(records: Iterable[dict[str, Any]], keys: Sequence[str]) -> list[list[str]]:
    """Table cells from records: ``*_ps`` keys as times, missing values as "-"."""
    def cell(value: Any, key: str) -> str:
        if value is None:
            return "-"
        return format_time(int(value)) if key.endswith("_ps") else str(value)

    return [[cell(record.get(key), key) for key in keys] for record in records]


def event_tables(results: dict[str, Any], faults: Sequence[dict[str, Any]]) -> list[Table]:
    """Every event log the run has; logs with no events are left out."""
    tables = []
    if faults:
        tables.append(Table("Link changes", ["at", "link", "change"], _rows(faults, ["at_ps", "link", "change"])))
    job = results.get("job") or {}
    if job.get("faults"):
        tables.append(Table(
            "What each fault did to the job",
            ["fault", "at", "changes", "iteration", "frames lost", "packets corrupted", "bytes carried",
             "QP timeouts", "QP errors", "interruptions", "cost"],
            [[str(f["index"]), format_time(int(f["at_ps"])), "; ".join(f["changes"]),
              str(f["iteration"]) if f["iteration"] is not None else f.get("when", "-"),
              *(([f"{f['frames_lost']:,}", f"{f['traffic']['rx_corrupt_packets']:,}",
                  format_bytes(int(f["traffic"]["tx_bytes"]))]) if f["hit_traffic"] else ["hit no traffic", "", ""]),
              str(f["qp_timeouts"]), str(f["qp_errors"]), str(f["interruptions"]),
              "-" if f["cost_ps"] is None else _signed(int(f["cost_ps"]))]
             for f in job["faults"]]))
    if job.get("interruptions"):
        tables.append(Table(
            "Job interruptions", ["at", "device", "rank", "cause", "aborted", "resumed", "restart iteration", "lost"],
            _rows(job["interruptions"], ["at_ps", "device", "rank", "cause", "aborted_ps", "resumed_ps",
                                         "restart_iteration", "lost_ps"])))
    if job.get("bytes"):
        scopes = list(dict.fromkeys(scope for per_dim in job["bytes"].values() for scope in per_dim))  # as written
        tables.append(Table("Communication bytes per dimension", ["dimension", *scopes],
                            [[dim, *(format_bytes(int(per_dim.get(s, 0))) for s in scopes)]
                             for dim, per_dim in job["bytes"].items()]))
    if results.get("qp_events"):
        tables.append(Table("RDMA queue pair events", ["at", "device", "flow", "kind", "reason"],
                            _rows(results["qp_events"], ["at_ps", "device", "flow", "kind", "reason"])))
    protection = sorted(({"device": name} | e for name, d in results.get("devices", {}).items()
                         for e in d.get("protection_events", [])), key=lambda e: (e.get("at_ps", 0), e["device"]))
    if protection:
        tables.append(Table("Protection switches", ["at", "device", "from", "to", "reason"],
                            _rows(protection, ["at_ps", "device", "from", "to", "reason"])))
    return tables


# -- the page -------------------------------------------------------------------------------------
def render(results: dict[str, Any], plots: Sequence[Plot], tables: Sequence[Table], files: Sequence[str],
           note: str = "") -> str:
    """The whole page as one string."""
    name = str(results.get("scenario", {}).get("name", "run"))
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(name)}: testbed report</title><style>{STYLE}</style></head><body>",
        f"<h1>Testbed report: {escape(name)}</h1>",
        _table(["figure", "value"], [[label, value] for label, value in headline(results)]),
    ]
    if note:
        parts.append(f'<p class="note">{escape(note)}</p>')
    for plot in plots:
        parts.append(f"<h2>{escape(plot.title)}</h2>")
        if plot.png is None:
            parts.append(f'<p class="note">{escape(plot.note)}</p>')
            continue
        uri = "data:image/png;base64," + base64.b64encode(plot.png).decode("ascii")
        parts.append(f'<img alt="{escape(plot.title)}" src="{uri}">')
        if plot.note:
            parts.append(f'<p class="note">{escape(plot.note)}</p>')
    for table in tables:
        parts.append(f"<h2>{escape(table.title)}</h2>")
        parts.append(_table(table.header, table.rows[:MAX_EVENT_ROWS]))
        if len(table.rows) > MAX_EVENT_ROWS:
            parts.append(f'<p class="note">first {MAX_EVENT_ROWS} of {len(table.rows)}; results.json has them all</p>')
    parts.append("<h2>Files</h2><ul>" + "".join(f"<li>{escape(f)}</li>" for f in files) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
