"""`testbed report` on a hand-made results.json whose every figure is known in advance."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.fault_impact import analyse_faults
from orchestrator.report import ReportError, data, links_and_faults, load_results, write_report
from orchestrator.results import RESULTS_SCHEMA

MS = 10**9  # ps
GBPS = 10**9
SAMPLES = 11  # 0, 100 ms, ..., 1 s
T_PS = [i * 100 * MS for i in range(SAMPLES)]
LINE_RATE_BYTES_PER_SAMPLE = 400 * GBPS // 8 // 10  # 400G for 100 ms: 5 GB


def _ramp(per_sample: int) -> list[int]:
    return [i * per_sample for i in range(SAMPLES)]


def _ports(**counts: int) -> dict[str, int]:
    return {"tx_frames": 0, "tx_bytes": 0, "drop_frames": 0, "down_drop_frames": 0, "lost_frames": 0,
            "rx_corrupt_packets": 0} | counts


def synthetic_results() -> dict[str, Any]:
    """Two servers on one leaf, a training job of 4 ranks that is interrupted once by a link fault."""
    job = {
        "model": "llama2-13b", "parallel": {"tp": 2, "pp": 1, "dp": 2, "ep": 1}, "gpus": 4,
        "iterations_planned": 3, "status": "completed",
        "iterations": [
            {"iteration": 0, "attempt": 0, "start_ps": 0, "end_ps": 200 * MS, "time_ps": 200 * MS},
            {"iteration": 1, "attempt": 0, "start_ps": 200 * MS, "end_ps": 400 * MS, "time_ps": 200 * MS},
            {"iteration": 2, "attempt": 1, "start_ps": 600 * MS, "end_ps": 820 * MS, "time_ps": 220 * MS},
        ],
        "iteration_time_ps": 200 * MS, "tokens_per_gpu_per_s": 1234.5, "communication_share": 0.12,
        "exposed_communication_ps": 20 * MS,
        "bytes": {dim: {"scale_up": 1 << 30, "fabric": 1 << 20, "wan": 0} for dim in ("tp", "pp", "dp", "ep")},
        "interruptions": [{"at_ps": 450 * MS, "device": "s1", "rank": 3, "cause": "qp error: retries exhausted",
                           "aborted_ps": 470 * MS, "resumed_ps": 600 * MS, "restart_iteration": 2,
                           "lost_ps": 150 * MS}],
        "lost_ps": 150 * MS, "checkpoints": [{"iteration": 1, "end_ps": 400 * MS}],
        "estimate": {"iteration_time_ps": 190 * MS},
        "equivalent_compute": 0.93,
        "timeline": {"iteration": 1, "ranks": {
            str(rank): [["F0", "compute", "", 200 * MS, 260 * MS],
                        ["tp-ar", "collective", "tp", 260 * MS, 280 * MS],
                        ["act", "send" if rank % 2 else "recv", "pp", 280 * MS, 300 * MS],
                        ["dp-ar", "collective", "dp", 300 * MS, 390 * MS]]
            for rank in range(4)}},
    }
    return {
        "schema": RESULTS_SCHEMA, "status": "ok", "error": None,
        "scenario": {"name": "synthetic", "source": "<string>", "seed": 7, "duration_ps": 1000 * MS},
        "virtual_end_ps": 1000 * MS, "events": 123456, "flows": {},
        "qp_events": [{"device": "s1", "at_ps": 450 * MS, "flow": "dp0", "kind": "error",
                       "reason": "retries exhausted"}],
        "devices": {
            "leaf0": {"kind": "switch", "counters": {"pfc_xoff_sent": 10, "drop_buffer_frames": 5},
                      "ports": {"d0": _ports(), "d1": _ports()}},
            "s0": {"kind": "tester", "counters": {"rdma_retx_bytes": 4096, "rdma_qp_errors": 0},
                   "ports": {"nic": _ports(drop_frames=2, lost_frames=3)}},
            "s1": {"kind": "tester", "counters": {"rdma_retx_bytes": 0, "rdma_qp_errors": 1},
                   "ports": {"nic": _ports()}},
        },
        "links": {
            "l0": {"a": "s0/nic", "z": "leaf0/d0", "rate_bps": 400 * GBPS, "length_mm": 2000},
            "l1": {"a": "s1/nic", "z": "leaf0/d1", "rate_bps": 400 * GBPS, "length_mm": 2000},
        },
        "faults": [{"at_ps": 450 * MS, "link": "l1", "change": "down"},
                   {"at_ps": 550 * MS, "link": "l1", "change": "up"}],
        "timeseries": {
            "leaf0": {"t_ps": T_PS, "buffer_bytes": [0, 10, 500_000, 20, 0, 0, 0, 0, 0, 0, 0],
                      "pfc_xoff_sent": [0, 0, 4, 8, 10, 10, 10, 10, 10, 10, 10],
                      "d0.tx_bytes": _ramp(LINE_RATE_BYTES_PER_SAMPLE // 2), "d0.queue_bytes": [0, 0, 9000] + [0] * 8,
                      "d1.tx_bytes": _ramp(1000), "d1.queue_bytes": [0] * SAMPLES},
            "s0": {"t_ps": T_PS, "nic.tx_bytes": _ramp(LINE_RATE_BYTES_PER_SAMPLE), "nic.queue_bytes": [0] * SAMPLES,
                   "rdma_retx_bytes": [0] * 5 + [4096] * 6, "rdma_qp_errors": [0] * SAMPLES},
            "s1": {"t_ps": T_PS, "nic.tx_bytes": _ramp(LINE_RATE_BYTES_PER_SAMPLE // 4),
                   "nic.queue_bytes": [0] * SAMPLES, "rdma_retx_bytes": [0] * SAMPLES,
                   "rdma_qp_errors": [0] * 5 + [1] * 6},
        },
        "job": job,
        "run": {"partition": "single", "backend": "inproc", "wall_seconds": 1.25, "windows": 1, "hosts": {}},
    }


def _run_dir(tmp_path: Path, results: dict[str, Any]) -> Path:
    (tmp_path / "results.json").write_text(json.dumps(results))
    return tmp_path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# -- the figures ----------------------------------------------------------------------------------
def test_utilisation_is_bits_over_time_over_line_rate():
    # 50 GB in 1 s on a 400G link is exactly line rate
    t_ps = np.array([0, 10**12], dtype=np.int64)
    assert data.utilisation(t_ps, np.array([0.0, 50e9]), 400 * GBPS).tolist() == [1.0]
    # half the bytes in half the time is still line rate; nothing in the next interval is idle
    t_ps = np.array([0, 5 * 10**11, 10**12], dtype=np.int64)
    assert data.utilisation(t_ps, np.array([0.0, 25e9, 25e9]), 400 * GBPS).tolist() == [1.0, 0.0]


def test_frames_lost_and_retransmits_add_up_over_every_device():
    results = synthetic_results()
    assert data.frames_lost(results) == {"egress buffer full": 2, "on the wire at a link failure": 3,
                                         "switch buffer full": 5}
    assert data.retransmitted_bytes(results) == 4096


def test_thinning_keeps_totals_of_counters_and_peaks_of_levels():
    t_ps = np.arange(10_001, dtype=np.int64) * MS
    cumulative = np.arange(10_001, dtype=np.float64) * 7
    t_thin, c_thin = data.thin_cumulative(t_ps, cumulative, points=100)
    assert len(t_thin) <= 101 + 1 and t_thin[-1] == t_ps[-1] and c_thin[-1] - c_thin[0] == 70_000
    level = np.zeros(10_001)
    level[4321] = 9.0
    t_thin, l_thin = data.thin_level(t_ps, level, points=100)
    assert len(t_thin) <= 100 and l_thin.max() == 9.0


def test_busiest_links_rank_by_bytes_and_leave_idle_ones_out():
    results = synthetic_results()
    results["links"]["idle"] = {"a": "nowhere/p0", "z": "leaf0/d9", "rate_bps": 400 * GBPS, "length_mm": 1}
    loads = data.link_loads(results, data.links(results))
    assert data.busiest_links(loads) == ["l0", "l1"]
    s0_out = next(x for x in loads if x.link == "l0" and x.direction == "a->z")
    assert s0_out.utilisation.tolist() == [1.0] * (SAMPLES - 1)


# -- the files ------------------------------------------------------------------------------------
def test_report_of_a_training_job_has_every_figure_and_plot(tmp_path):
    written = write_report(_run_dir(tmp_path, synthetic_results()))
    assert [p.name for p in written] == ["report.html", "timeseries.csv", "links.csv", "iterations.csv"]
    html = (tmp_path / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 5
    assert "no data" not in html and "http" not in html.replace("<!DOCTYPE html>", "")  # self-contained
    for figure in ("synthetic (seed 7)", "<td>1 s</td>", "123,456", "1.25 s", "llama2-13b", "200 ms (estimate 190 ms)",
                   "0.930", "1,234.5", "12.0%", "20 ms", "150 ms", "retries exhausted", "4 KiB"):
        assert figure in html, figure
    assert "10 (2 egress buffer full, 3 on the wire at a link failure, 5 switch buffer full)" in html


def test_csvs_hold_every_sample_in_long_form(tmp_path):
    results = synthetic_results()
    write_report(_run_dir(tmp_path, results))

    series = _rows(tmp_path / "timeseries.csv")
    assert list(series[0]) == ["t_ps", "device", "counter", "value"]
    counters = sum(len(s) - 1 for s in results["timeseries"].values())
    assert len(series) == counters * SAMPLES
    assert {"t_ps": str(300 * MS), "device": "leaf0", "counter": "pfc_xoff_sent", "value": "8"} in series

    links = _rows(tmp_path / "links.csv")
    assert list(links[0]) == ["t_ps", "link", "direction", "utilisation"]
    assert len(links) == 2 * 2 * (SAMPLES - 1)  # two links, both directions, every interval
    assert {float(r["utilisation"]) for r in links if r["link"] == "l0" and r["direction"] == "a->z"} == {1.0}
    assert {float(r["utilisation"]) for r in links if r["link"] == "l0" and r["direction"] == "z->a"} == {0.5}
    assert links[0]["t_ps"] == str(100 * MS)  # an interval is stamped at its end

    iterations = _rows(tmp_path / "iterations.csv")
    assert [list(r.values()) for r in iterations] == [
        [str(it[k]) for k in ("iteration", "attempt", "start_ps", "end_ps", "time_ps")]
        for it in results["job"]["iterations"]]


def test_a_run_without_a_job_says_so_and_writes_no_iterations(tmp_path):
    results = synthetic_results()
    del results["job"]
    written = write_report(_run_dir(tmp_path, results))
    assert "iterations.csv" not in {p.name for p in written}
    html = (tmp_path / "report.html").read_text()
    assert html.count("<img ") == 3
    assert "no data: the run has no training job timeline" in html
    assert "no data: the run has no training job iterations" in html
    assert "llama2" not in html and "frames lost" in html and "retransmitted bytes" in html


def test_a_quiet_run_says_no_pause_or_retransmit_happened(tmp_path):
    results = synthetic_results()
    for sampled in results["timeseries"].values():
        for counter in ("pfc_xoff_sent", "rdma_retx_bytes", "rdma_qp_errors"):
            if counter in sampled:
                sampled[counter] = [0] * SAMPLES
    write_report(_run_dir(tmp_path, results))
    assert "none: no pause, retransmit or QP error during the run" in (tmp_path / "report.html").read_text()


def test_a_failed_run_with_missing_sections_still_reports(tmp_path):
    results = {"schema": RESULTS_SCHEMA, "status": "failed", "error": "host h1 died", "scenario": {"name": "x"},
               "devices": {}, "timeseries": {}, "links": {}}
    written = write_report(_run_dir(tmp_path, results))
    html = written[0].read_text()
    assert "failed: host h1 died" in html and html.count("no data") == 5
    assert (tmp_path / "timeseries.csv").read_text() == "t_ps,device,counter,value\n"


# -- where links come from ------------------------------------------------------------------------
def test_links_of_older_results_come_from_the_scenario_file():
    results = {"scenario": {"source": "scenarios/fabric/link-down.yaml", "seed": 1}}
    links, faults, note = links_and_faults(results)
    assert links and all(link.rate_bps > 0 and "/" in link.a and "/" in link.z for link in links.values())
    assert faults and {"at_ps", "link", "change"} <= set(faults[0]) and "link-down.yaml" in note


def test_links_of_older_results_without_their_scenario_are_reported_missing(tmp_path):
    results = synthetic_results()
    del results["links"]
    results["scenario"]["source"] = str(tmp_path / "gone.yaml")
    write_report(_run_dir(tmp_path, results))
    assert "no data: results.json lists no links and the scenario file" in (tmp_path / "report.html").read_text()


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "no results.json in"),
        ("{not json", "is not valid JSON (line 1"),
        ('{"schema": "someone-else/v9"}', "is not a testbed results file (schema 'someone-else/v9'"),
        ("[1, 2]", "is not a testbed results file (schema None"),
        (json.dumps({"schema": RESULTS_SCHEMA, "timeseries": [1]}), "does not have the layout of"),
    ],
)
def test_unreadable_results_raise_one_clear_error(tmp_path, content, words):
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(ReportError, match="^.*" + words.replace("(", r"\(")):
        write_report(tmp_path)


def test_a_missing_run_dir_is_an_error(tmp_path):
    with pytest.raises(ReportError, match="no such directory"):
        load_results(tmp_path / "absent")
    (tmp_path / "file").write_text("")
    with pytest.raises(ReportError, match="is not a directory"):
        load_results(tmp_path / "file")


def test_the_report_leaves_results_json_alone(tmp_path):
    results = synthetic_results()
    run_dir = _run_dir(tmp_path, copy.deepcopy(results))
    before = (run_dir / "results.json").read_bytes()
    write_report(run_dir)
    assert (run_dir / "results.json").read_bytes() == before


def with_fault_impact() -> dict[str, Any]:
    """The synthetic run with a baseline, QP events and what its faults' links carried and lost."""
    results = synthetic_results()
    results["qp_events"] = [
        {"device": "s1", "at_ps": 300 * MS, "flow": "dp0", "kind": "timeout", "reason": "local ack timeout",
         "since_ps": 250 * MS, "rtt_ps": 10},
        {"device": "s1", "at_ps": 450 * MS, "flow": "dp0", "kind": "qp_error", "reason": "retries exhausted",
         "since_ps": 440 * MS, "rtt_ps": 10}]
    results["faults"] = [
        {"at_ps": 250 * MS, "index": 0, "link": "l0", "change": "ber 1e-08",
         "traffic": {"tx_bytes": 1 << 30, "lost_frames": 0, "down_drop_frames": 0, "rx_corrupt_packets": 12}},
        {"at_ps": 440 * MS, "index": 1, "link": "l1", "change": "down",
         "traffic": {"tx_bytes": 0, "lost_frames": 7, "down_drop_frames": 2, "rx_corrupt_packets": 0}},
        {"at_ps": 900 * MS, "index": 2, "link": "l1", "change": "up",
         "traffic": {"tx_bytes": 0, "lost_frames": 0, "down_drop_frames": 0, "rx_corrupt_packets": 0}}]
    results["job"]["iterations"][1]["time_ps"] = 260 * MS  # the one the BER and the timeout fell in
    results["job"]["iterations"][1]["end_ps"] = 460 * MS
    results["job"]["baseline"] = {"source": "base", "iteration_time_ps": 190 * MS}
    analyse_faults(results)
    return results


def test_each_fault_is_told_with_its_iteration_traffic_and_cost():
    job = with_fault_impact()["job"]
    ber, cut, repair = job["faults"]
    assert (ber["iteration"], ber["qp_timeouts"], ber["traffic"]["rx_corrupt_packets"]) == (1, 1, 12)
    assert ber["cost_ps"] == 260 * MS - 190 * MS  # its iteration against the baseline's median
    assert (cut["iteration"], cut["frames_lost"], cut["qp_errors"], cut["interruptions"]) == (1, 9, 1, 1)
    assert (ber["shared_with"], cut["shared_with"], repair["shared_with"]) == ([1], [0], [])
    assert cut["cost_ps"] == 260 * MS - 190 * MS + 150 * MS  # and the time the interruption lost
    assert repair["when"] == "after the last iteration" and not repair["hit_traffic"]
    worst = job["worst_iteration"]
    assert (worst["iteration"], worst["faults"], worst["qp_timeouts"], worst["qp_errors"]) == (1, [0, 1], 1, 1)
    assert worst["equivalent_compute"] == pytest.approx(190 / 260)
    assert [it["equivalent_compute"] for it in job["iterations"]] == pytest.approx([190 / 200, 190 / 260, 190 / 220])


def test_the_iteration_plot_marks_timeouts_errors_and_the_baseline(tmp_path):
    results = with_fault_impact()
    marks = data.iteration_markers(results["job"], results["qp_events"])
    assert marks == {"timeouts_ps": [300 * MS], "qp_errors_ps": [450 * MS], "baseline_ps": 190 * MS}
    write_report(_run_dir(tmp_path, results))
    html = (tmp_path / "report.html").read_text()
    assert "What each fault did to the job" in html and "hit no traffic" in html
    assert "<td>worst iteration</td><td>iteration 1: 260 ms, +70 ms against the baseline&#x27;s median" in html


def test_a_degraded_link_still_in_force_is_a_cause_of_a_later_worst_iteration():
    results = synthetic_results()
    results["links"]["l0"]["rate_bps"] = 400 * GBPS
    results["faults"] = [
        {"at_ps": 100 * MS, "index": 0, "link": "l0", "change": "ber 1e-08", "ber": 1e-8,
         "traffic": {"tx_bytes": 1, "lost_frames": 0, "down_drop_frames": 0, "rx_corrupt_packets": 3}},
        {"at_ps": 120 * MS, "index": 1, "link": "l1", "change": "rate 100 Gb/s", "rate_bps": 100 * GBPS,
         "traffic": {"tx_bytes": 1, "lost_frames": 0, "down_drop_frames": 0, "rx_corrupt_packets": 0}},
        {"at_ps": 150 * MS, "index": 2, "link": "l1", "change": "rate 400 Gb/s", "rate_bps": 400 * GBPS,
         "traffic": {"tx_bytes": 1, "lost_frames": 0, "down_drop_frames": 0, "rx_corrupt_packets": 0}}]
    results["job"]["interruptions"] = []
    results["job"]["iterations"][2]["time_ps"] = 300 * MS  # the worst, long after the faults applied
    analyse_faults(results)
    worst = results["job"]["worst_iteration"]
    # the BER still degrades l0; l1 was slowed and restored before: neither change on l1 is a cause
    assert (worst["iteration"], worst["faults"], worst["in_force"]) == (2, [], [0])
    assert worst["causes"] == ["fault 0 in force since 100 ms (l0 ber 1e-08)"]
