"""A GPU server: G GPUs that run a training job's per-rank programs, an internal scale-up mesh, and
one RDMA NIC per GPU (dual-plane when the ``nics`` option bonds two ports).

The server wires three parts, each given only what it needs:

- the program runner (:mod:`.runner`): each rank runs its program (see :mod:`emulators.model.job`)
  one iteration at a time on CUDA-like streams; compute takes flops / (peak x MFU); collectives are
  decomposed into messages (:mod:`.collectives`);
- the transports (:mod:`.transports`): messages between GPUs of this server cross the scale-up mesh
  in closed form (:mod:`.mesh`), or OLink switches frame by frame (:mod:`.olink_transport`);
  messages to other servers go over the GPUs' NICs, frame by frame through the emulated network, by
  the job's transport (:mod:`emulators.ccl`: NCCL's connections, or one idealised QP per message);
- the job's control plane (:mod:`.control`): failure detection, the watchdog, checkpoints, aborts
  and restarts, over the testbed's bus.

The server itself dispatches the kernel's hooks to them and gathers their results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emulators.ccl.base import NicTransport
from emulators.ccl.ideal import IdealTransport
from emulators.ccl.nccl import CONNECTION_FLAG, NcclTransport
from emulators.ccl.settings import NcclSettings
from emulators.gpu_server.control import JobControl
from emulators.gpu_server.gpus import DEFAULT_GPUS, TERA, hardware_of
from emulators.gpu_server.inbox import Inbox
from emulators.gpu_server.mesh import ScaleUpMesh
from emulators.gpu_server.olink_transport import OLinkTransport
from emulators.gpu_server.rank import Rank, timeline_iteration
from emulators.gpu_server.runner import ProgramRunner
from emulators.gpu_server.traffic import Traffic
from emulators.gpu_server.transports import Transports
from emulators.kernel.device import Device
from emulators.kernel.engine import Engine
from emulators.kernel.frame import PFC, Frame, honour_pfc
from emulators.kernel.port import Port
from emulators.model.job import NCCL, SERIAL_SHIFT, JobAttempt, JobPlan
from emulators.olink import spec as olink_spec
from emulators.rdma.host import build_nics
from emulators.rdma.nic import RdmaNic
from emulators.rdma.qp import QueuePair
from emulators.rdma.receiver import FlowReceiver

if TYPE_CHECKING:
    from emulators.context import ScenarioContext


@dataclass(frozen=True)
class _JobParts:
    """The parts of a server that exist only when the scenario runs a job."""

    control: JobControl
    transports: Transports
    runner: ProgramRunner


class GpuServer(Device):
    kind = "gpu_server"

    def __init__(self, name: str, device_id: int, engine: Engine, seed: int,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(name, device_id, engine, seed, options)
        self.gpus = int(self.options.get("gpus", DEFAULT_GPUS))
        self.peak_flops_per_s, self.mfu, self.scale_up_bps, self.scale_up_latency_ps = hardware_of(self.options)
        self.nics: list[RdmaNic] = []
        self.nic_of: dict[str, RdmaNic] = {}
        self.job = JobAttempt(0)  # the job's replica of its attempt, aborted or not, and its finished ranks
        self.dead_serials: set[int] = set()  # iteration serials of aborted attempts
        self.inbox = Inbox()
        chunk = int(self.options.get("olink", {}).get("chunk", olink_spec.DEFAULT_CHUNK))
        self.olink = OLinkTransport(self, chunk, self.inbox, self.dead_serials)  # scale-up ports, if any
        self.plan: JobPlan | None = None
        self.ranks: dict[int, Rank] = {}
        self.transport: NicTransport = IdealTransport(self)  # messages over the NICs (the job's choice)
        self.job_parts: _JobParts | None = None
        self.counters.update(gpu_compute_ps=0, iterations_done=0, messages_sent=0, job_interruptions=0)

    # -- set-up -----------------------------------------------------------------------------------
    def configure(self, context: ScenarioContext) -> None:
        self.context = context
        nic_ports = {name: port for name, port in self.ports.items() if not olink_spec.is_scale_up_port(name)}
        self.nics = build_nics(self, self.name, self.options, nic_ports, context)
        self.nic_of = {port.name: nic for nic in self.nics for port in nic.ports}
        self.olink.configure(context)
        plan = context.scenario.job
        if plan is None:
            return
        self.plan = plan
        self.job = JobAttempt(len(plan.ranks))
        site_of = {d.name: d.site for d in context.scenario.devices}
        if plan.transport == NCCL:
            self.transport = NcclTransport(self, NcclSettings.from_options(plan.nccl))
        for rank in plan.ranks_on(self.name):
            gpu = plan.ranks[rank].gpu
            nic = self.nics[gpu] if gpu < len(self.nics) else None
            self.ranks[rank] = Rank(rank, gpu, plan.programs[rank], nic)
        control = JobControl(self, self.name, self.id, plan, self.job, self.dead_serials, context.post, self.ports,
                             {rank.gpu for rank in self.ranks.values()}, self.counters, self._stop, self._resume)
        traffic = Traffic(timeline_iteration(plan))
        mesh = ScaleUpMesh(self, self.gpus, self.scale_up_bps, self.scale_up_latency_ps, self.ranks, self.inbox,
                           traffic)
        transports = Transports(self.name, plan, site_of, mesh, self.olink, self.transport, self.inbox, traffic,
                                self.counters)
        runner = ProgramRunner(self, plan, self.ranks, self.job, transports, control.watchdog, control,
                               self.peak_flops_per_s, self.mfu, self.counters)
        self.job_parts = _JobParts(control, transports, runner)

    def start(self) -> None:
        if self.job_parts is not None:
            self.job_parts.runner.start()

    def _stop(self, restart_iteration: int) -> None:
        """The attempt is aborted: the ranks and what they were sending stop."""
        assert self.job_parts is not None
        self.job_parts.runner.stop(restart_iteration)
        self.job_parts.transports.abort(restart_iteration)

    def _resume(self) -> None:
        assert self.job_parts is not None
        self.job_parts.transports.resume()
        self.job_parts.runner.resume()

    # -- NIC hooks --------------------------------------------------------------------------------
    def on_qp_complete(self, qp: QueuePair) -> None:
        self.transport.on_qp_complete(qp)

    def on_qp_error(self, qp: QueuePair) -> None:
        self.transport.on_qp_error(qp)
        if self.job_parts is not None:
            self.job_parts.control.qp_failed(f"{qp.nic.name} ({qp.name})", qp.error["reason"] if qp.error else "error")

    def accepts(self, flow: int) -> bool:
        """Data for an aborted attempt is only acknowledged, never kept."""
        if flow & CONNECTION_FLAG:
            return self.transport.accepts(flow)
        return (flow >> SERIAL_SHIFT) not in self.dead_serials

    def on_delivered(self, receiver: FlowReceiver) -> None:
        self.transport.on_delivered(receiver)

    # -- port hooks: OLink ports, or the NIC's --------------------------------------------------------
    def on_frame(self, port: Port, frame: Frame) -> None:
        link = self.olink.port_of(port)
        if link is not None:
            link.receive(frame)
            return
        if frame.kind == PFC:
            honour_pfc(port, frame)
            return
        self.nic_of[port.name].on_frame(port, frame)

    def on_port_idle(self, port: Port) -> None:
        link = self.olink.port_of(port)
        if link is not None:
            link.pump()
            return
        self.nic_of[port.name].pump(port)

    def on_link_change(self, port: Port) -> None:
        link = self.olink.port_of(port)
        if link is not None:
            link.link_changed()
            if self.job_parts is not None:
                self.job_parts.control.scale_up_link_changed(port, link.link_up)
            return
        if port.link is not None and not port.link.up:
            port.paused = 0
        self.nic_of[port.name].on_link_change(port)

    def on_frame_sent(self, port: Port, frame: Frame) -> None:
        self.olink.frame_sent(frame)

    def on_frame_dropped(self, port: Port, frame: Frame) -> None:
        link = self.olink.port_of(port)
        if link is not None:
            link.dropped(frame)
            self.olink.frame_sent(frame)  # it waits in the replay buffer now
            return
        self.nic_of[port.name].on_frame_dropped(frame)

    def on_frame_lost(self, port: Port, frame: Frame) -> None:
        link = self.olink.port_of(port)
        if link is not None:
            link.lost(frame)

    def on_bus(self, payload: dict[str, Any]) -> None:
        if self.job_parts is not None:
            self.job_parts.control.on_bus(payload)

    # -- results ----------------------------------------------------------------------------------
    def gpu_busy_ps(self) -> dict[int, int]:
        """Compute time of each GPU so far, up to now (a compute op under way counts as far as it ran)."""
        if self.job_parts is None:
            return dict.fromkeys(range(self.gpus), 0)
        return self.job_parts.runner.gpu_busy_ps(self.gpus)

    def counter_names(self) -> list[str]:
        return super().counter_names() + self.olink.counter_names()

    def counter_values(self) -> list[int]:
        return super().counter_values() + self.olink.counter_values()

    def results(self) -> dict[str, Any]:
        out = super().results()
        events = sorted((e for nic in self.nics for e in nic.events), key=lambda e: (e["at_ps"], e["nic"], e["flow"]))
        if events:
            out["events"] = events  # QP timeouts, errors, plane failovers: results.json's qp_events
        if self.olink.ports:
            out["olink"] = {name: link.counters() for name, link in self.olink.ports.items()}
        if self.job_parts is None or not self.ranks:
            return out
        traffic = self.job_parts.transports.traffic
        out["job"] = {
            "ranks": self.job_parts.runner.results(),
            "bytes": traffic.bytes,
            "iteration_bytes": traffic.iteration_bytes,
            "peak_tflops": self.peak_flops_per_s / TERA, "mfu": self.mfu,
            **self.job_parts.control.results(),
        }
        return out
