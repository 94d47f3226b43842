"""The traffic tester: a bench test set with ports that send configured flows and measure what
arrives — throughput, one-way latency distribution, loss, corruption and reordering.

A flow sends ``count`` frames of ``frame_bytes`` at ``rate_bps`` from ``start_ps``; frame i leaves
the generator at start + ceil(i · bits · 1e12 / rate), so long flows do not drift.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emulators.kernel.device import Device
from emulators.kernel.engine import Engine
from emulators.kernel.frame import DATA, PATH_INFO, PFC, Frame, device_of, honour_pfc
from emulators.kernel.port import Port
from emulators.kernel.vtime import emission_ps
from emulators.model.scenario import RDMA, FlowSpec
from emulators.rdma.host import build_nics, nic_ports
from emulators.rdma.nic import RdmaNic
from emulators.rdma.qp import QueuePair
from emulators.rdma.receiver import FlowReceiver
from emulators.tester.defaults import DEFAULTS

if TYPE_CHECKING:
    from emulators.context import ScenarioContext



@dataclass
class TxFlow:
    index: int
    spec: FlowSpec
    port: Port
    src_address: int
    dst_address: int
    next_seq: int = 0
    frames: int = 0
    bytes: int = 0
    drop_frames: int = 0
    drop_bytes: int = 0
    first_tx_ps: int = -1
    last_tx_ps: int = -1

    def results(self) -> dict[str, Any]:
        return {
            "tx_frames": self.frames, "tx_bytes": self.bytes,
            "tx_drop_frames": self.drop_frames, "tx_drop_bytes": self.drop_bytes,
            "first_tx_ps": self.first_tx_ps, "last_tx_ps": self.last_tx_ps,
        }


@dataclass
class RxFlow:
    spec: FlowSpec
    frames: int = 0
    bytes: int = 0
    packets: int = 0
    corrupt_packets: int = 0
    corrupt_bytes: int = 0
    lost_frames: int = 0  # on the wire when a link went down
    lost_bytes: int = 0
    out_of_order: int = 0
    max_seq: int = -1
    first_rx_ps: int = -1
    last_rx_ps: int = -1
    first_frame_bytes: int = 0
    latencies_ps: array = field(default_factory=lambda: array("q"))

    def results(self) -> dict[str, Any]:
        good_bytes = self.bytes - self.corrupt_bytes
        span = self.last_rx_ps - self.first_rx_ps
        # bytes after the first frame over the time between first and last arrival: exact for a
        # steady stream, where total bytes / span would overstate by N/(N-1)
        throughput = (self.bytes - self.first_frame_bytes) * 8 * 10**12 // span if span > 0 else 0
        return {
            "rx_frames": self.frames, "rx_bytes": self.bytes, "rx_packets": self.packets,
            "rx_good_bytes": good_bytes,
            "corrupt_packets": self.corrupt_packets, "corrupt_bytes": self.corrupt_bytes,
            "lost_in_flight_frames": self.lost_frames, "lost_in_flight_bytes": self.lost_bytes,
            "out_of_order": self.out_of_order,
            "first_rx_ps": self.first_rx_ps, "last_rx_ps": self.last_rx_ps,
            "throughput_bps": throughput,
            "latency_ps": latency_summary(self.latencies_ps),
        }


def latency_summary(samples: array) -> dict[str, int]:
    """Nearest-rank percentiles in whole picoseconds (integers, so every run prints the same)."""
    n = len(samples)
    if n == 0:
        return {"count": 0}
    ordered = sorted(samples)

    def rank(p: int) -> int:  # p in per-mille
        return ordered[max(0, -(-p * n // 1000) - 1)]

    return {"count": n, "min": ordered[0], "mean": sum(ordered) // n, "p50": rank(500),
            "p90": rank(900), "p99": rank(990), "p999": rank(999), "max": ordered[-1]}


class Tester(Device):
    kind = "tester"

    def __init__(self, name: str, device_id: int, engine: Engine, seed: int,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(name, device_id, engine, seed, options)
        self.mtu = int(self.options.get("mtu", DEFAULTS["mtu"]))
        self.tx_flows: dict[int, TxFlow] = {}  # by flow index
        self.rx_flows: dict[int, RxFlow] = {}
        self.nics: list[RdmaNic] = []
        self.nic_of: dict[str, RdmaNic] = {}  # port name -> the NIC that owns it
        self.rdma_flows: set[int] = set()
        self.counters.update(frames_sent=0, bytes_sent=0, frames_received=0, bytes_received=0,
                             packets_corrupt=0, frames_out_of_order=0, frames_unexpected=0)

    def configure(self, context: ScenarioContext) -> None:
        self._build_nics(context)
        for index, spec in enumerate(context.scenario.flows):
            if spec.transport == RDMA:
                if spec.src.device == self.name:
                    dst = context.scenario.device(spec.dst.device)
                    remote = [context.address(dst.name, p) for p in nic_ports(dst.options, spec.dst.port)]
                    path = context.path_links(spec.src, spec.dst)
                    hops, rtt = context.path_delay(path)
                    crossed = frozenset(context.ids[d] for link in path for d in (link.a.device, link.z.device))
                    self.nic_of[spec.src.port].open_qp(index, spec, remote, self.seed, hops, rtt, crossed)
                if spec.dst.device == self.name:
                    self.nic_of[spec.dst.port].expect(index, spec.name)
                self.rdma_flows.add(index)
                continue
            if spec.src.device == self.name:
                self.tx_flows[index] = TxFlow(index, spec, self.ports[spec.src.port], context.address(spec.src),
                                              context.address(spec.dst))
            if spec.dst.device == self.name:
                self.rx_flows[index] = RxFlow(spec)

    def _build_nics(self, context: ScenarioContext) -> None:
        """One RDMA NIC per port, or per group of ports the ``nics`` option bonds (dual plane)."""
        self.nics = build_nics(self, self.name, self.options, self.ports, context)
        self.nic_of = {port.name: nic for nic in self.nics for port in nic.ports}

    def on_qp_error(self, qp: QueuePair) -> None:
        """A queue pair gave up: the job layer treats this as an interruption (see results ``events``)."""

    def on_qp_complete(self, qp: QueuePair) -> None:
        """A message was delivered and acknowledged in full."""

    def on_delivered(self, receiver: FlowReceiver) -> None:
        """New bytes of an RDMA flow arrived here (the receiver's results count them)."""

    def accepts(self, flow: int) -> bool:
        """Every flow of the scenario is wanted for as long as the run lasts."""
        return True

    def start(self) -> None:
        for nic in self.nics:
            if nic.qps:
                nic.start()
        for flow in self.tx_flows.values():
            if flow.spec.count > 0:
                self.at(flow.spec.start_ps, self._emit, flow)

    def _emit(self, flow: TxFlow) -> None:
        spec = flow.spec
        now = self.engine.now
        frame = Frame(DATA, flow.index, flow.src_address, flow.dst_address, spec.frame_bytes, self.mtu,
                      seq=flow.next_seq, priority=spec.priority, created_ps=now)
        flow.frames += 1
        flow.bytes += spec.frame_bytes
        if flow.first_tx_ps < 0:
            flow.first_tx_ps = now
        flow.last_tx_ps = now
        self.counters["frames_sent"] += 1
        self.counters["bytes_sent"] += spec.frame_bytes
        flow.next_seq += 1
        flow.port.send(frame)
        if flow.next_seq < spec.count:
            self.at(spec.start_ps + emission_ps(flow.next_seq, spec.frame_bytes, spec.rate_bps),
                    self._emit, flow)

    def on_frame(self, port: Port, frame: Frame) -> None:
        if frame.kind == PFC:
            honour_pfc(port, frame)
            return
        if frame.flow in self.rdma_flows or frame.kind == PATH_INFO:
            self.nic_of[port.name].on_frame(port, frame)
            return
        rx = self.rx_flows.get(frame.flow) if frame.kind == DATA and device_of(frame.dst) == self.id else None
        if rx is None:
            self.counters["frames_unexpected"] += 1
            return
        now = self.engine.now
        rx.frames += 1
        rx.bytes += frame.nbytes
        rx.packets += frame.packets - frame.corrupt_packets
        rx.corrupt_packets += frame.corrupt_packets
        rx.corrupt_bytes += frame.corrupt_bytes
        rx.latencies_ps.append(now - frame.created_ps)
        if rx.first_rx_ps < 0:
            rx.first_rx_ps = now
            rx.first_frame_bytes = frame.nbytes
        rx.last_rx_ps = now
        if frame.seq < rx.max_seq:
            rx.out_of_order += 1
            self.counters["frames_out_of_order"] += 1
        else:
            rx.max_seq = frame.seq
        self.counters["frames_received"] += 1
        self.counters["bytes_received"] += frame.nbytes
        self.counters["packets_corrupt"] += frame.corrupt_packets

    def on_port_idle(self, port: Port) -> None:
        if self.rdma_flows:
            self.nic_of[port.name].pump(port)

    def on_link_change(self, port: Port) -> None:
        if port.link is not None and not port.link.up:
            port.paused = 0  # a pause from the far end ends with the link
        if self.rdma_flows:
            self.nic_of[port.name].on_link_change(port)

    def on_frame_dropped(self, port: Port, frame: Frame) -> None:
        if frame.flow in self.rdma_flows:
            self.nic_of[port.name].on_frame_dropped(frame)
            return
        flow = self.tx_flows.get(frame.flow)
        if flow is not None:
            flow.drop_frames += 1
            flow.drop_bytes += frame.nbytes

    def on_frame_lost(self, port: Port, frame: Frame) -> None:
        rx = self.rx_flows.get(frame.flow)
        if rx is not None:
            rx.lost_frames += 1
            rx.lost_bytes += frame.nbytes

    def results(self) -> dict[str, Any]:
        out = super().results()
        out["flows_tx"] = {f.spec.name: f.results() for f in self.tx_flows.values()}
        out["flows_rx"] = {rx.spec.name: rx.results() for rx in self.rx_flows.values()}
        events = []
        for nic in self.nics:
            if nic.qps or nic.receivers:
                rdma = nic.results()
                out["flows_tx"].update(rdma["tx"])
                out["flows_rx"].update(rdma["rx"])
                events.extend(nic.events)
        if events:
            out["events"] = events
        return out

