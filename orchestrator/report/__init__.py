"""``testbed report RUN_DIR``: an HTML page with plots and CSV time series from a run's results.json.

Everything is derived from results.json alone, so a report can be made long after the run, on
another machine. One exception, for results written before results.json carried ``links`` and
``faults``: the scenario file named in the results (a path relative to where `testbed run` ran) is
read for them, when it is still there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.report import data, page, plots, tables
from orchestrator.results import RESULTS_SCHEMA, read_json
from orchestrator.scenario.loader import ScenarioError, load_scenario

__all__ = ["ReportError", "load_results", "write_report"]

HTML_NAME = "report.html"
TIMESERIES_CSV = "timeseries.csv"
LINKS_CSV = "links.csv"
ITERATIONS_CSV = "iterations.csv"


class ReportError(Exception):
    """The run directory cannot be reported on; the message says what to change."""


def load_results(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/results.json, checked to be ours."""
    if not run_dir.exists():
        raise ReportError(f"no such directory: {run_dir}")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a directory (give the directory that holds results.json)")
    path = run_dir / "results.json"
    if not path.exists():
        raise ReportError(f"no results.json in {run_dir}: run `testbed run SCENARIO --out {run_dir}` first")
    try:
        results = read_json(path)
    except ValueError as e:
        raise ReportError(str(e)) from None
    except OSError as e:
        raise ReportError(f"cannot read {path}: {e.strerror or e}") from None
    schema = results.get("schema") if isinstance(results, dict) else None
    if schema != RESULTS_SCHEMA:
        raise ReportError(f"{path} is not a testbed results file (schema {schema!r}, expected {RESULTS_SCHEMA!r})")
    return results


def write_report(run_dir: Path) -> list[Path]:
    """Write report.html, timeseries.csv, links.csv (and iterations.csv for a training job) into
    ``run_dir``; return their paths, the page first."""
    results = load_results(run_dir)
    try:
        return _write(results, run_dir)
    except OSError as e:
        raise ReportError(f"cannot write the report into {run_dir}: {e}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:  # edited by hand or truncated
        raise ReportError(f"{run_dir / 'results.json'} does not have the layout of {RESULTS_SCHEMA} "
                          f"({type(e).__name__}: {e})") from None


def _write(results: dict[str, Any], run_dir: Path) -> list[Path]:
    links, faults, note = links_and_faults(results)
    end_ps = int(results.get("virtual_end_ps") or 0) or _last_sample(results)
    job = results.get("job")

    written = [tables.write_timeseries(results, run_dir / TIMESERIES_CSV),
               tables.write_links(data.link_loads(results, links), run_dir / LINKS_CSV)]
    if job:
        written.append(tables.write_iterations(job, run_dir / ITERATIONS_CSV))

    figures = [
        plots.rank_timeline(job),
        plots.iteration_times(job, faults, results.get("qp_events") or []),
        plots.link_utilisation(data.link_loads(results, links, points=data.PLOT_POINTS), faults, end_ps,
                               no_links_reason="" if links else f"no data: {note or 'results.json lists no links'}"),
        plots.buffer_depth(data.device_series(results, "buffer_bytes", data.BUFFERED_KINDS),
                           data.port_series(results, "queue_bytes", data.BUFFERED_KINDS), faults, end_ps),
        plots.pauses_and_retransmits([
            ("XOFF sent", data.device_series(results, "pfc_xoff_sent"), False),
            ("retransmitted", data.device_series(results, "rdma_retx_bytes"), True),
            ("QP errors", data.device_series(results, "rdma_qp_errors"), False),
        ], faults, end_ps),
    ]
    html = page.render(results, figures, page.event_tables(results, faults), [p.name for p in written],
                       note if links else "")
    report = run_dir / HTML_NAME
    report.write_text(html, encoding="utf-8")
    return [report, *written]


def _last_sample(results: dict[str, Any]) -> int:
    """The run's end when a failed run did not record it: its last sample."""
    return max((int(s["t_ps"][-1]) for s in results.get("timeseries", {}).values() if s.get("t_ps")), default=0)


def links_and_faults(results: dict[str, Any]) -> tuple[dict[str, data.Link], list[dict[str, Any]], str]:
    """Links and link changes from results.json, else from the scenario file; the note says where
    they came from when not from results.json, or why there are none."""
    if "links" in results:
        return data.links(results), list(results.get("faults") or []), ""
    source = str(results.get("scenario", {}).get("source", ""))
    try:
        scenario = load_scenario(source, seed=results.get("scenario", {}).get("seed"))
    except (ScenarioError, OSError):
        return {}, list(results.get("faults") or []), (
            f"results.json lists no links and the scenario file {source!r} cannot be read")
    known = {link.name: data.Link(link.name, f"{link.a.device}/{link.a.port}", f"{link.z.device}/{link.z.port}",
                                  link.rate_bps) for link in scenario.links}
    faults = results.get("faults")
    if faults is None:
        faults = [{"at_ps": f.at_ps, "link": f.link, "change": f.describe()} for f in scenario.faults]
    return known, list(faults), f"links and link changes read from {source} (results.json predates them)"
