"""The NCCL-like job transport (emulators.ccl): NCCL's rules for channels and steps, the slot pipeline
against its closed form, the IB Local ACK Timeout and retry count, persistent QPs under ECMP, and the
collective watchdog."""

from __future__ import annotations

import math

import pytest

from emulators.ccl.nccl import P2P, comm_label, p2p_comm, parse_flow, qp_flow, ring_comm
from emulators.ccl.settings import (
    NcclSettings,
    channels_per_net_peer,
    p2p_channels,
    p2p_chunk,
    part_bounds,
)
from emulators.kernel.vtime import PS_PER_MS, PS_PER_S, serialization_ps
from emulators.model.job import ALL_REDUCE, COLLECTIVE, IDEAL, RECV, SEND, Op
from emulators.model.scenario import FIBER_DELAY_PS_PER_M
from emulators.rdma.settings import PACKET_OVERHEAD_BYTES, local_ack_timeout_ps
from orchestrator.results import deterministic_view
from orchestrator.run import run_scenario
from tests.helpers import with_programs

KiB, MiB = 1 << 10, 1 << 20
GOODPUT_BPS = 400e9 * 4096 / (4096 + PACKET_OVERHEAD_BYTES)


def test_nccl_defaults_are_nccl_2_30s() -> None:
    settings = NcclSettings()
    assert (settings.buffsize, settings.steps, settings.p2p_chunksize) == (4 * MiB, 8, 128 * KiB)
    assert (settings.ib_timeout, settings.ib_retry_cnt, settings.qps_per_connection) == (20, 7, 1)
    assert settings.timeout_ps == 4_096_000 * 2**20  # 4.096 us x 2^20 = 4.29 s
    assert settings.ring_slice_steps == 2


@pytest.mark.parametrize(("nic_gbps", "channels"), [(100, 1), (200, 2), (400, 4), (800, 8), (3200, 32)])
def test_channels_per_network_peer_follow_nccls_14_gbytes_a_channel(nic_gbps: int, channels: int) -> None:
    assert channels_per_net_peer(nic_gbps * 10**9) == channels


def test_p2p_sends_are_cut_as_nccl_cuts_them() -> None:
    step = 128 * KiB
    assert p2p_channels(64 * KiB, 4, step) == 1  # one part of at least half a step
    assert p2p_channels(96 * KiB, 4, step) == 2
    assert p2p_channels(256 * KiB, 4, step) == 4
    assert p2p_channels(64 * MiB, 4, step) == 4
    assert (p2p_chunk(100 * KiB, step), p2p_chunk(512 * KiB, step), p2p_chunk(MiB, step)) == (32 * KiB, 64 * KiB, step)
    parts = part_bounds(10 * MiB + 5, 4)
    assert sum(parts) == 10 * MiB + 5 and all(p % (4 * KiB) == 0 for p in parts[:-1])
    assert part_bounds(5 * KiB, 4) == [4 * KiB, KiB, 0, 0]


def test_a_qp_id_carries_its_connection_and_names_it() -> None:
    flow = qp_flow(attempt=3, src=12, dst=40001, comm=p2p_comm(1), channel=31, qp=7)
    assert 0 < flow < 1 << 63  # a signed 64-bit frame field carries it
    assert parse_flow(flow) == (3, 12, 40001, P2P | 1, 31, 7)
    assert comm_label(p2p_comm(1)) == "p2p-pp" and comm_label(ring_comm(9)) == "ring-g9"


def two_servers(length: str, **job: object) -> str:
    return f"""version: 0
name: p2p
duration: 2s
sample_interval: 1ms
devices:
  s0: {{kind: gpu_server, ports: [nic0], options: {{gpus: 1}}}}
  s1: {{kind: gpu_server, ports: [nic0], options: {{gpus: 1}}}}
links:
  - {{name: wire, a: s0/nic0, z: s1/nic0, rate: 400G, length: {length}}}
"""


def send_recv(text: str, nbytes: int, **fields: object) -> dict:
    programs = [(Op(SEND, "s", nbytes=nbytes, peer=1, dim="pp", label="send"),),
                (Op(RECV, "r", nbytes=nbytes, peer=0, dim="pp", label="recv"),)]
    return run_scenario(with_programs(text, [("s0", 0), ("s1", 0)], [], programs, **fields))


@pytest.mark.parametrize("channels", [1, 2, 4])
@pytest.mark.parametrize("size_mib", [32, 128])
def test_a_p2p_send_on_a_long_idle_path_moves_a_buffer_per_round_trip(channels: int, size_mib: int) -> None:
    size = size_mib * MiB
    results = send_recv(two_servers("100km"), size, nccl={"nchannels": channels})
    measured = results["job"]["iterations"][0]["time_ps"]
    round_trip = 2 * 100_000 * FIBER_DELAY_PS_PER_M
    buffer = 8 * 128 * KiB  # NCCL_STEPS slots of NCCL_P2P_NET_CHUNKSIZE per channel
    rounds = math.ceil(size / channels / buffer)
    # the receiver's first credit takes half a round trip to reach the sender; then every buffer's
    # worth waits a round trip for its credits to come back
    closed = max(size * 8 / GOODPUT_BPS * PS_PER_S, rounds * round_trip) + round_trip / 2
    assert measured == pytest.approx(closed, rel=0.02)
    # bytes: the message once, plus one 64-byte CTS entry per step
    received = sum(d["counters"]["rdma_rx_payload_bytes"] for d in results["devices"].values())
    assert received == size + 64 * math.ceil(size / channels / (128 * KiB)) * channels


def test_on_a_short_path_the_line_rate_bounds_a_send() -> None:
    size = 256 * MiB
    measured = send_recv(two_servers("10m"), size)["job"]["iterations"][0]["time_ps"]
    assert measured == pytest.approx(size * 8 / GOODPUT_BPS * PS_PER_S, rel=0.02)


def test_a_larger_buffer_is_what_a_user_sets_for_distance() -> None:
    size = 128 * MiB
    text = two_servers("100km")
    stock = send_recv(text, size)["job"]["iterations"][0]["time_ps"]
    tuned = send_recv(text, size, nccl={"buffsize": 64 * MiB, "p2p_chunksize": 8 * MiB})["job"]
    # 4 channels x 8 steps x 8 MiB cover the 49 MB the path holds: the line rate bounds it again
    round_trip = 2 * 100_000 * FIBER_DELAY_PS_PER_M
    assert tuned["iterations"][0]["time_ps"] < stock / 5
    assert tuned["iterations"][0]["time_ps"] == pytest.approx(size * 8 / GOODPUT_BPS * PS_PER_S + 1.5 * round_trip,
                                                              rel=0.05)


def test_a_timeout_costs_the_ib_local_ack_timeout_and_the_retry_count_ends_the_qp() -> None:
    text = two_servers("10m") + "faults:\n  - {at: 1ms, link: wire, state: down}\n"
    results = send_recv(text, 512 * MiB, nccl={"ib_timeout": 10, "ib_retry_cnt": 3, "nchannels": 1},
                        restart=False)
    timeout = local_ack_timeout_ps(10)
    assert timeout == 4_096_000 * 1024
    events = [e for e in results["qp_events"] if e["flow"] == "r0>r1 p2p-pp ch0 qp0" and e["device"] == "s0"]
    timeouts = [e["at_ps"] for e in events if e["kind"] == "timeout"]
    [error] = [e["at_ps"] for e in events if e["kind"] == "qp_error"]
    assert len(timeouts) == 3  # retries 1..3; the fourth expiry is the error
    # each expiry is exactly one Local ACK Timeout after the one before; the first after the last ACK
    assert [b - a for a, b in zip(timeouts, [*timeouts[1:], error], strict=True)] == [timeout] * 3
    assert 1 * PS_PER_MS < timeouts[0] <= 1 * PS_PER_MS + timeout
    [stop] = results["job"]["interruptions"]
    assert stop["kind"] == "qp_error" and "3 retries of 4.19 ms" in stop["cause"]
    assert stop["at_ps"] == error


def leaf_spine(iterations: int, transport: str) -> dict:
    """8 single-GPU servers under two leaves and four spines, a ring all-reduce over all of them."""
    lines = ["version: 0", "name: ecmp", "duration: 1s", "devices:"]
    for s in range(8):
        lines.append(f"  s{s}: {{kind: gpu_server, ports: [nic0], options: {{gpus: 1}}}}")
    for leaf in range(2):
        lines.append(f"  leaf{leaf}: {{kind: switch, ports: [d0, d1, d2, d3, u0, u1, u2, u3]}}")
    for spine in range(4):
        lines.append(f"  spine{spine}: {{kind: switch, ports: [p0, p1]}}")
    lines.append("links:")
    for s in range(8):
        lines.append(f"  - {{name: s{s}, a: s{s}/nic0, z: leaf{s // 4}/d{s % 4}, rate: 400G, length: 3m}}")
    for leaf in range(2):
        for spine in range(4):
            lines.append(f"  - {{name: l{leaf}-sp{spine}, a: leaf{leaf}/u{spine}, z: spine{spine}/p{leaf}, "
                         "rate: 400G, length: 30m}")
    text = "\n".join(lines) + "\n"
    ring = (0, 4, 1, 5, 2, 6, 3, 7)  # every hop crosses the spines
    op = Op(COLLECTIVE, "comm", collective=ALL_REDUCE, group=0, cid=0, nbytes=64 * MiB, dim="dp", label="ar")
    scenario = with_programs(text, [(f"s{r}", 0) for r in range(8)], [ring], [(op,)] * 8, iterations=iterations,
                             transport=transport)
    return run_scenario(scenario)


def spine_bytes(results: dict) -> dict[str, int]:
    return {f"{name}.{port}": counters["tx_bytes"] for name, device in results["devices"].items()
            if name.startswith("leaf") for port, counters in device["ports"].items() if port.startswith("u")}


@pytest.mark.parametrize("transport", ["nccl", IDEAL])
def test_persistent_qps_take_the_same_spines_every_iteration_and_fresh_ones_redraw(transport: str) -> None:
    first = spine_bytes(leaf_spine(1, transport))
    both = spine_bytes(leaf_spine(2, transport))
    second = {link: both[link] - first[link] for link in both}
    assert sum(second.values()) == pytest.approx(sum(first.values()), rel=1e-3)  # acks and CNPs vary a little
    moved = max(abs(second[link] - first[link]) / first[link] for link in first)
    if transport == "nccl":
        assert moved < 1e-3  # the same QPs on the same links: the same collisions again
    else:
        assert moved > 0.2  # every message a fresh QP with a fresh UDP source port


def test_the_watchdog_aborts_a_collective_stalled_longer_than_its_timeout() -> None:
    text = two_servers("10m") + "faults:\n  - {at: 1ms, link: wire, state: down}\n"
    # a retry budget far longer than the watchdog: 8 x 68.7 s
    results = send_recv(text, 512 * MiB, nccl={"ib_timeout": 24}, watchdog_ps=100 * PS_PER_MS, restart=False)
    [stop] = results["job"]["interruptions"]
    assert stop["kind"] == "watchdog" and "watchdog: send on rank 0 not done after 100 ms" in stop["cause"]
    assert stop["at_ps"] == 100 * PS_PER_MS  # both ops started at 0; rank 0's send is the older by id
    assert results["job"]["status"] == "stopped"
    assert not [e for e in results["qp_events"] if e["kind"] == "qp_error"]


def test_a_job_on_the_nccl_transport_is_the_same_in_every_partition() -> None:
    text = two_servers("1km") + "faults:\n  - {at: 300us, link: wire, ber: 1e-7}\n"
    programs = [(Op(SEND, "s", nbytes=64 * MiB, peer=1, dim="pp"), Op(RECV, "r", nbytes=8 * MiB, peer=1, dim="pp")),
                (Op(RECV, "r", nbytes=64 * MiB, peer=0, dim="pp"), Op(SEND, "s", nbytes=8 * MiB, peer=0, dim="pp"))]
    scenario = with_programs(text, [("s0", 0), ("s1", 0)], [], programs, iterations=2)
    single = deterministic_view(run_scenario(scenario))
    assert single["job"]["status"] == "completed"
    assert deterministic_view(run_scenario(scenario, partition="device")) == single


def test_retransmissions_only_cost_time_the_ideal_transport_keeps_its_closed_form() -> None:
    size = 32 * MiB
    ideal = send_recv(two_servers("10m"), size, transport=IDEAL)["job"]["iterations"][0]["time_ps"]
    assert ideal == pytest.approx(size * 8 / GOODPUT_BPS * PS_PER_S, rel=0.02)
    assert serialization_ps(size, 400 * 10**9) < ideal
