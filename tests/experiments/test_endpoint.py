"""The endpoint across a WAN: how NCCL connections over ConnectX-like QPs ride out what the optical layer
does (a protection switch, a BER), with and without what the gateway tells the NICs (端网协同), and a
two-site job on the NCCL transport in every partition."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from emulators.context import ScenarioContext
from emulators.kernel.vtime import PS_PER_MS, PS_PER_S
from emulators.model.job import RECV, SEND, Op
from emulators.model.scenario import Endpoint
from emulators.rdma.settings import local_ack_timeout_ps
from emulators.registry import DEVICE_KINDS
from orchestrator.cli import summary
from orchestrator.job_results import equivalent_compute
from orchestrator.results import deterministic_view
from orchestrator.run import run_scenario
from orchestrator.scenario.loader import parse_scenario
from tests.helpers import with_programs

MiB = 1 << 20
TIMEOUT_PS = local_ack_timeout_ps(20)  # NCCL's default: 4.29 s
ONE_WAY_PS = 100_000 * 4900  # 100 km of fibre


def two_sites(*, rdma: str = "", faults: str = "", duration: str = "6s", sample: str = "1ms") -> str:
    return f"""version: 0
name: two-sites
duration: {duration}
sample_interval: {sample}
fabrics:
  dc1: &centre {{leaves: 1, spines: 1, servers_per_leaf: 1, server_rate: 400G, server_kind: gpu_server,
                server_options: {{gpus: 1, rdma: {{chunk: 256KiB{rdma}}}}}}}
  dc2: *centre
wan:
  line_rate: 800G
  clients: 1
  client_rate: 400G
  pairs:
    - {{a: dc1, b: dc2, length: 100km, protection: {{length: 100km, kind: 1+1, switch_time: 50ms}}}}
faults:
{faults or "  []"}
"""


def stream(text: str, nbytes: int, **fields: Any) -> dict[str, Any]:
    """Rank 0 (dc1) sends ``nbytes`` to rank 1 (dc2) on the NCCL transport."""
    programs = [(Op(SEND, "s", nbytes=nbytes, peer=1, dim="pp", label="send"),),
                (Op(RECV, "r", nbytes=nbytes, peer=0, dim="pp", label="recv"),)]
    return run_scenario(with_programs(text, [("dc1-s0", 0), ("dc2-s0", 0)], [], programs, **fields))


def received_ps(results: dict[str, Any]) -> int:
    return results["job"]["iterations"][0]["end_ps"]


def timeouts(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in results["qp_events"] if e["kind"] == "timeout"]


CUT = "  - {at: 10ms, wan: dc1-dc2, cut: working}"
SIZE = 1024 * MiB  # about 22 ms at 400G: the cut lands in the middle


@functools.cache
def cut_runs() -> dict[str, dict[str, Any]]:
    return {
        "clean": stream(two_sites(), SIZE),
        "told": stream(two_sites(faults=CUT), SIZE),
        "not told": stream(two_sites(faults=CUT, rdma=", cooperation: {protection: false}"), SIZE),
    }


def test_a_protection_switch_under_a_busy_stream_costs_one_timer_unless_the_nic_is_told() -> None:
    runs = cut_runs()
    clean = received_ps(runs["clean"])
    assert 10 * PS_PER_MS < clean < 40 * PS_PER_MS and not timeouts(runs["clean"])
    [switch] = [e["at_ps"] for e in runs["told"]["devices"]["otn-dc2"]["protection_events"]]
    assert switch == 60 * PS_PER_MS  # the cut at 10 ms plus the 50 ms switch time
    # not told: what was in flight at the cut was the tail of every connection's credit; nothing
    # follows it to reveal the loss, so the stream waits for the Local ACK Timeout, once
    late = runs["not told"]
    stalled = timeouts(late)
    assert stalled and all(e["reason"].endswith("(retry 1)") for e in stalled)
    # (the last acknowledgement may still arrive up to a one-way trip after the cut)
    assert all(10 * PS_PER_MS < e["at_ps"] <= 10 * PS_PER_MS + ONE_WAY_PS + TIMEOUT_PS for e in stalled)
    assert received_ps(late) == pytest.approx(clean + TIMEOUT_PS, rel=0.01)
    # told: the gateways announce the switch and the NICs retransmit at once from the oldest
    # unacknowledged packet: the stream resumes within a round trip of the switch, no timer fires
    told = runs["told"]
    assert not timeouts(told)
    sent = told["timeseries"]["dc1-s0"]
    resent = [t for t, before, now in zip(sent["t_ps"][1:], sent["nic.tx_bytes"], sent["nic.tx_bytes"][1:],
                                          strict=False) if t > switch and now > before]
    assert resent and resent[0] <= switch + PS_PER_MS  # in the 1 ms sample right after the switch
    # go-back-N resends what was in flight (half of it arrived before the cut, its ACKs did not), so
    # the last byte lands about a round trip after the clean run's plus the 50 ms gap
    assert received_ps(told) == pytest.approx(clean + 50 * PS_PER_MS + 2 * ONE_WAY_PS, abs=2 * ONE_WAY_PS)


def ping_pong(rdma: str, rounds: int = 100) -> dict[str, Any]:
    """64 KiB each way per iteration through a WAN line with a BER of 1e-6, in frames of one packet:
    every message ends in a tail (nothing follows it until the reply), and 3 % of packets are hit."""
    text = two_sites(rdma=", slow_restart_rate: 10G" + rdma, faults="  - {at: 0ps, link: wan-dc1-dc2, ber: 1e-6}",
                     duration="200s", sample="1s").replace("chunk: 256KiB", "chunk: 4KiB")
    size = 64 * 1024
    programs = [(Op(SEND, "s", nbytes=size, peer=1, dim="pp"), Op(RECV, "r", deps=(0,), nbytes=size, peer=1, dim="pp")),
                (Op(RECV, "r", nbytes=size, peer=0, dim="pp"), Op(SEND, "s", deps=(0,), nbytes=size, peer=0, dim="pp"))]
    return run_scenario(with_programs(text, [("dc1-s0", 0), ("dc2-s0", 0)], [], programs, iterations=rounds))


def test_a_ber_explained_loss_is_probed_and_an_unexplained_one_waits_and_restarts_slow() -> None:
    explained, unexplained = ping_pong(""), ping_pong(", cooperation: {ber: false}")
    assert explained["job"]["status"] == unexplained["job"]["status"] == "completed"

    def total(results: dict[str, Any], counter: str) -> int:
        return sum(results["devices"][name]["counters"][counter] for name in ("dc1-s0", "dc2-s0"))

    # not told: every tail loss waits for the Local ACK Timeout, and the QP restarts at 10G to climb back
    assert total(unexplained, "rdma_timeouts") >= 3
    assert total(unexplained, "rdma_slow_restarts") == total(unexplained, "rdma_timeouts")
    assert total(unexplained, "rdma_probes") == 0
    assert all("rate restarts at 10 Gb/s" in e["reason"] for e in timeouts(unexplained))
    # told of the BER: a loss is corruption; a probe two round trips on resends it at full rate
    assert total(explained, "rdma_probes") >= 3 and total(explained, "rdma_slow_restarts") == 0
    assert total(explained, "rdma_timeouts") < total(unexplained, "rdma_timeouts")
    span = {name: run["job"]["iterations"][-1]["end_ps"] for name, run in (("told", explained),
                                                                            ("not told", unexplained))}
    assert span["not told"] - span["told"] > (total(unexplained, "rdma_timeouts") - total(explained, "rdma_timeouts")
                                              ) * TIMEOUT_PS * 0.9


@pytest.mark.parametrize("partition", ["site", "device"])
def test_a_two_site_job_on_the_nccl_transport_is_the_same_in_every_partition(partition: str) -> None:
    text = two_sites(faults="  - {at: 2ms, link: wan-dc1-dc2, ber: 1e-8}", duration="200ms")
    programs = [(Op(SEND, "s", nbytes=96 * MiB, peer=1, dim="pp"), Op(RECV, "r", nbytes=32 * MiB, peer=1, dim="pp")),
                (Op(RECV, "r", nbytes=96 * MiB, peer=0, dim="pp"), Op(SEND, "s", nbytes=32 * MiB, peer=0, dim="pp"))]
    scenario = with_programs(text, [("dc1-s0", 0), ("dc2-s0", 0)], [], programs, iterations=2)
    single = deterministic_view(run_scenario(scenario))
    assert single["job"]["status"] == "completed" and single["job"]["iterations"][1]["time_ps"] < 100 * PS_PER_MS
    assert deterministic_view(run_scenario(scenario, partition=partition)) == single


def test_what_the_cut_did_is_told_per_fault_and_heads_the_summary() -> None:
    runs = cut_runs()
    late = runs["not told"]
    equivalent_compute(late, runs["clean"], "the clean run")  # its one iteration is the baseline
    job = late["job"]
    [fault] = job["faults"]
    assert (fault["index"], fault["at_ps"], fault["iteration"], fault["changes"]) == (
        0, 10 * PS_PER_MS, 0, ["wan-dc1-dc2 down"])
    # the working line carried nothing while it was down; what was on it at the cut was lost, and
    # the OTN dropped what reached the dead port before the switch
    assert fault["hit_traffic"] and fault["frames_lost"] > 0 and fault["traffic"]["tx_bytes"] == 0
    assert fault["qp_timeouts"] == len(timeouts(late)) and fault["qp_errors"] == 0
    clean = received_ps(runs["clean"])
    assert fault["cost_ps"] == job["worst_iteration"]["cost_ps"] == received_ps(late) - clean
    assert fault["cost_ps"] == pytest.approx(TIMEOUT_PS, rel=0.01)
    worst = job["worst_iteration"]
    assert worst["faults"] == [0] and worst["equivalent_compute"] == pytest.approx(clean / received_ps(late))
    assert job["iterations"][0]["equivalent_compute"] == worst["equivalent_compute"]
    text = summary(late)
    assert "worst iteration 0: 4.32" in text and "fault 0 at 10 ms (wan-dc1-dc2 down); 8 QP timeouts" in text
    assert "fault 0 at 10 ms (wan-dc1-dc2 down), in iteration 0: " in text and "8 QP timeouts" in text


def test_a_fault_that_hit_no_traffic_says_so() -> None:
    quiet = stream(two_sites(faults="  - {at: 100ms, wan: dc1-dc2, cut: working}", duration="200ms"), 64 * MiB)
    [fault] = quiet["job"]["faults"]
    assert fault["iteration"] is None and fault["when"] == "after the last iteration"
    assert not fault["hit_traffic"] and fault["frames_lost"] == fault["qp_timeouts"] == 0
    assert "fault 0 at 100 ms (wan-dc1-dc2 down), after the last iteration: hit no traffic" in summary(quiet)


def test_told_the_distance_a_connection_buffer_covers_the_path_and_untold_it_is_nccls_default() -> None:
    size = 256 * MiB
    told = received_ps(stream(two_sites(duration="1s"), size))
    untold = received_ps(stream(two_sites(rdma=", cooperation: {distance: false}", duration="1s"), size))
    context = ScenarioContext(parse_scenario(two_sites()), DEVICE_KINDS)
    _, round_trip = context.path_delay(context.path_links(Endpoint("dc1-s0", "nic"), Endpoint("dc2-s0", "nic")))
    # untold: NCCL's 8 steps of 128 KiB per channel, 4 channels: 4 MiB a round trip
    assert untold == pytest.approx(size / (4 * MiB) * round_trip + round_trip / 2, rel=0.03)
    # told: the buffer holds the path's bandwidth-delay product: the line rate bounds the send
    line_ps = size * 8 / (400e9 * 4096 / (4096 + 82)) * PS_PER_S
    assert told == pytest.approx(line_ps + 1.5 * round_trip, rel=0.05)
    assert untold > 5 * told
