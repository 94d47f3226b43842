"""A GPU server: G GPUs that run a training job's per-rank programs, an internal scale-up mesh, and
one RDMA NIC per GPU (dual-plane when the ``nics`` option bonds two ports).

Each rank runs its program (see :mod:`emulators.model.job`) one iteration at a time on
CUDA-like streams. Compute takes flops / (peak x MFU). Messages between GPUs of this server cross the
scale-up mesh in closed form (each GPU's egress serialises what it sends at the mesh's per-GPU
bandwidth, plus its latency); messages to other servers go over the GPUs' NICs, frame by frame
through the emulated network, by the job's transport (:mod:`emulators.ccl`: NCCL's connections, or
one idealised QP per message). Collectives are decomposed into those messages
(:mod:`emulators.gpu_server.collectives`). A watchdog aborts the job when a communication op has
not finished within the job's watchdog timeout (:mod:`emulators.gpu_server.watchdog`).

The job's control plane (failure detection, checkpoints, restart) runs over the testbed's bus: every
GPU server keeps the same replica of the job's state, updated only by bus messages, so every host
sees the same interruption at the same virtual time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from emulators.ccl.base import NicTransport
from emulators.ccl.ideal import IdealTransport
from emulators.ccl.nccl import CONNECTION_FLAG, NcclTransport, p2p_comm
from emulators.ccl.settings import NcclSettings
from emulators.gpu_server.collectives import CollectiveRun, call
from emulators.gpu_server.gpus import DEFAULT_GPUS, TERA, compute_ps, hardware_of
from emulators.gpu_server.watchdog import Watchdog
from emulators.kernel.device import Device
from emulators.kernel.engine import Engine
from emulators.kernel.frame import DATA, PFC, Frame, honour_pfc
from emulators.kernel.port import Port
from emulators.kernel.vtime import serialization_ps
from emulators.model.job import (
    COLLECTIVE,
    COMPUTE,
    DIMENSIONS,
    NCCL,
    RECV,
    SEND,
    SERIAL_SHIFT,
    JobAttempt,
    JobPlan,
    Op,
    iteration_serial,
    message_id,
)
from emulators.model.scenario import Endpoint
from emulators.olink import link as olink
from emulators.olink import spec as olink_spec
from emulators.olink.topology import gpu_domain, gpu_planes, in_network_switches
from emulators.rdma.host import build_nics
from emulators.rdma.nic import RdmaNic
from emulators.rdma.qp import QueuePair
from emulators.rdma.receiver import FlowReceiver

if TYPE_CHECKING:
    from emulators.context import ScenarioContext

SCALE_UP, FABRIC, WAN = "scale_up", "fabric", "wan"  # link classes traffic is accounted to
LINK_CLASSES = (SCALE_UP, FABRIC, WAN)
COMM_KINDS = (SEND, COLLECTIVE)  # what counts as communication time (a recv only waits)

Done = Callable[[], None]


class Rank:
    """One GPU's share of the job: its program, where it is in it, and what it measured."""

    def __init__(self, rank: int, gpu: int, program: tuple[Op, ...], nic: RdmaNic | None) -> None:
        self.rank = rank
        self.gpu = gpu
        self.program = program
        self.nic = nic
        self.dependents: list[list[int]] = [[] for _ in program]
        for index, op in enumerate(program):
            for dep in op.deps:
                self.dependents[dep].append(index)
        self.stream_order: dict[str, list[int]] = {}
        for index, op in enumerate(program):
            self.stream_order.setdefault(op.stream, []).append(index)
        # where the rank is
        self.epoch = 0  # bumped on abort: callbacks of an older epoch do nothing
        self.iteration = 0
        self.serial = 0
        self.pending: list[int] = []
        self.queues: dict[str, deque[int]] = {}
        self.busy: set[str] = set()
        self.finished_ops = 0
        self.started_ps = 0
        self.op_start: list[int] = [0] * len(program)
        # activity: compute and communication in progress, and the time each was busy
        self.computing = 0
        self.communicating = 0
        self.since = 0
        self.compute_ps = 0
        self.comm_ps = 0
        self.exposed_ps = 0  # communicating while not computing
        self.iterations: list[list[int]] = []  # [iteration, attempt, start_ps, end_ps]
        self.timeline: list[list[Any]] = []  # [label, kind, dim, start_ps, end_ps] of one iteration


class _Message:
    """A message on OLink: done once the last frame of every plane's part has left its port."""

    __slots__ = ("parts_left", "done")

    def __init__(self, parts: int, done: Done) -> None:
        self.parts_left = parts
        self.done = done


class _Part:
    """The bytes [offset, end) of a message that go out through one OLink port."""

    __slots__ = ("uid", "dst", "offset", "end", "vc", "fields", "message")

    def __init__(self, uid: int, dst: int, offset: int, end: int, vc: int, fields: dict[str, int] | None,
                 message: _Message) -> None:
        self.uid = uid
        self.dst = dst
        self.offset = offset
        self.end = end
        self.vc = vc
        self.fields = fields
        self.message = message


class GpuServer(Device):
    kind = "gpu_server"

    def __init__(self, name: str, device_id: int, engine: Engine, seed: int,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(name, device_id, engine, seed, options)
        self.gpus = int(self.options.get("gpus", DEFAULT_GPUS))
        self.peak_flops_per_s, self.mfu, self.scale_up_bps, self.scale_up_latency_ps = hardware_of(self.options)
        self.nics: list[RdmaNic] = []
        self.nic_of: dict[str, RdmaNic] = {}
        # OLink scale-up ports, when the server's GPUs attach to OLink switches
        olink_options = self.options.get("olink", {})
        self.olink_chunk = int(olink_options.get("chunk", olink_spec.DEFAULT_CHUNK))
        self.olink: dict[str, olink.OLinkPort] = {}
        self.olink_of_gpu: dict[int, list[olink.OLinkPort]] = {}
        self.olink_out: dict[str, list[deque[_Part]]] = {}  # port -> per channel: parts it sends, in turn
        self.olink_arrived: dict[int, int] = {}  # message id -> payload bytes arrived on OLink
        self.domain_of: dict[tuple[str, int], int | None] = {}  # (server, gpu) -> its scale-up domain
        self.in_network: dict[int, list[str] | None] = {}  # collective group -> its reducing switches
        self.olink_peer_addresses: dict[int, list[int]] = {}  # rank -> its scale-up port addresses
        self.olink_down_since: dict[str, int] = {}  # scale-up ports whose link is down, since when
        self.collective_chunk = self.olink_chunk
        self.plan: JobPlan | None = None
        self.ranks: dict[int, Rank] = {}
        self.egress_free: list[int] = [0] * self.gpus  # each GPU's scale-up egress is busy until
        self.transport: NicTransport = IdealTransport(self)  # messages over the NICs (the job's choice)
        self.watchdog: Watchdog | None = None
        self.waiting: dict[int, tuple[int, Done]] = {}  # message id -> (bytes, done): scale-up receives
        self.arrived_locally: set[int] = set()  # scale-up messages that came before their receive
        self.joins: dict[tuple[int, int, int], list[tuple[int, Done]]] = {}  # local parts of collectives
        self.bytes = {dim: dict.fromkeys(LINK_CLASSES, 0) for dim in DIMENSIONS}  # the whole run
        self.iteration_bytes = {dim: dict.fromkeys(LINK_CLASSES, 0) for dim in DIMENSIONS}  # the timeline's
        self.bus_seq = 0
        self.counters.update(gpu_compute_ps=0, iterations_done=0, messages_sent=0, job_interruptions=0)
        # the job's replica of its control-plane state
        self.job = JobAttempt(0)  # the job's attempt, aborted or not, and its finished ranks
        self.saved: dict[int, tuple[int, int]] = {}  # rank -> (last iteration it saved, when)
        self.saves: dict[int, int] = {}  # iteration -> ranks that saved it (until all have)
        self.checkpoint = (-1, 0)  # the last iteration every rank saved, and when the last save ended
        self.checkpoints: list[dict[str, int]] = []
        self.interruptions: list[dict[str, Any]] = []
        self.dead_serials: set[int] = set()  # iteration serials of aborted attempts

    # -- set-up -----------------------------------------------------------------------------------
    def configure(self, context: ScenarioContext) -> None:
        self.context = context
        nic_ports = {name: port for name, port in self.ports.items() if not olink_spec.is_scale_up_port(name)}
        self.nics = build_nics(self, self.name, self.options, nic_ports, context)
        self.nic_of = {port.name: nic for nic in self.nics for port in nic.ports}
        self._configure_olink(context)
        plan = context.scenario.job
        if plan is None:
            return
        self.plan = plan
        self.job = JobAttempt(len(plan.ranks))
        self.saved = {rank: (-1, plan.start_ps) for rank in range(len(plan.ranks))}
        self.checkpoint = (-1, plan.start_ps)
        self.site_of = {d.name: d.site for d in context.scenario.devices}
        if plan.transport == NCCL:
            self.transport = NcclTransport(self, NcclSettings.from_options(plan.nccl))
        self.watchdog = Watchdog(self, plan.watchdog_ps)
        for rank in plan.ranks_on(self.name):
            gpu = plan.ranks[rank].gpu
            nic = self.nics[gpu] if gpu < len(self.nics) else None
            self.ranks[rank] = Rank(rank, gpu, plan.programs[rank], nic)

    def _configure_olink(self, context: ScenarioContext) -> None:
        scenario = context.scenario
        me = scenario.device(self.name)
        chunk = olink_spec.largest_chunk(scenario.devices)
        timeout = olink_spec.replay_timeout(self.kind, self.options)
        for gpu, names in olink_spec.scale_up_ports(self.ports).items():
            for pname in names:
                port = self.ports[pname]
                far = context.peer_of.get(Endpoint(self.name, pname))
                if far is None or port.link is None:
                    continue
                switch = scenario.device(far.device)
                far_credit = olink_spec.credit(switch.kind, switch.options, chunk)
                vcs = int(switch.options.get("vcs", olink_spec.DEFAULT_VCS))
                link = olink.OLinkPort(
                    self, port, context.address(self.name, pname), context.address(far), vcs=vcs,
                    own_credit=olink_spec.credit(self.kind, self.options, chunk), far_credit=far_credit,
                    replay_buffer=olink_spec.replay_buffer(self.kind, self.options, chunk),
                    largest_wire_bytes=olink_spec.wire_bytes(chunk), replay_timeout_ps=timeout,
                    accept=self._olink_accept, refill=self._olink_refill)
                self.olink[pname] = link
                self.olink_of_gpu.setdefault(gpu, []).append(link)
                self.olink_out[pname] = [deque() for _ in range(vcs)]
        # in-network contributions are matched chunk by chunk at the switch: every member cuts alike
        self.collective_chunk = chunk
        for gpu in self.olink_of_gpu:
            self.domain_of[(self.name, gpu)] = gpu_domain(scenario, me, gpu)

    def start(self) -> None:
        if self.plan is not None:
            for rank in self.ranks.values():
                self.at(self.plan.start_ps, self._begin_iteration, (rank, rank.epoch))

    # -- iterations -------------------------------------------------------------------------------
    def _begin_iteration(self, rank_epoch: tuple[Rank, int]) -> None:
        rank, epoch = rank_epoch
        if epoch != rank.epoch:
            return
        assert self.plan is not None
        rank.serial = iteration_serial(self.job.number, rank.iteration, self.plan.iterations)
        rank.pending = [len(op.deps) for op in rank.program]
        rank.queues = {stream: deque(ops) for stream, ops in rank.stream_order.items()}
        rank.busy = set()
        rank.finished_ops = 0
        rank.started_ps = self.now
        if rank.iteration == self._timeline_iteration():
            rank.timeline = []  # the latest attempt at it is the one shown
        for stream in rank.queues:
            self._try_start(rank, stream)

    def _try_start(self, rank: Rank, stream: str) -> None:
        if stream in rank.busy:
            return
        queue = rank.queues[stream]
        if not queue or rank.pending[queue[0]]:
            return
        index = queue.popleft()
        rank.busy.add(stream)
        self._start_op(rank, index)

    def _start_op(self, rank: Rank, index: int) -> None:
        op = rank.program[index]
        rank.op_start[index] = self.now
        epoch = rank.epoch

        def done() -> None:
            if rank.epoch == epoch:
                self._finish_op(rank, index)

        kind = op.kind
        if kind == COMPUTE:
            self._activity(rank, compute=1)
            duration = compute_ps(op.flops, self.peak_flops_per_s, self.mfu)
            self.counters["gpu_compute_ps"] += duration
            self.at(self.now + duration, call, done)
            return
        assert self.watchdog is not None
        self.watchdog.started(rank.rank, index, op.label or op.kind)
        if kind == SEND:
            self._activity(rank, comm=1)
            self.transfer(rank, op.peer, op.nbytes, self.message(rank, tag=op.tag), op.dim, done, _p2p(op.dim))
        elif kind == RECV:
            if self.receive(rank, op.peer, op.nbytes, self.message(rank, src=op.peer, tag=op.tag), _p2p(op.dim), done):
                self.at(self.now, call, done)  # an event, not a nested call: chains of ready ops stay flat
        else:
            assert self.plan is not None
            self._activity(rank, comm=1)
            CollectiveRun(self, rank, op, self.plan.groups[op.group], done).start()

    def _finish_op(self, rank: Rank, index: int) -> None:
        op = rank.program[index]
        if op.kind == COMPUTE:
            self._activity(rank, compute=-1)
        else:
            assert self.watchdog is not None
            self.watchdog.finished(rank.rank, index)
            if op.kind in COMM_KINDS:
                self._activity(rank, comm=-1)
        if rank.iteration == self._timeline_iteration():
            rank.timeline.append([op.label or op.kind, op.kind, op.dim, rank.op_start[index], self.now])
        rank.busy.discard(op.stream)
        rank.finished_ops += 1
        pending = rank.pending
        program = rank.program
        for dependent in rank.dependents[index]:
            pending[dependent] -= 1
            if not pending[dependent]:
                self._try_start(rank, program[dependent].stream)
        self._try_start(rank, op.stream)
        if rank.finished_ops == len(program):
            self._end_iteration(rank)

    def _timeline_iteration(self) -> int:
        assert self.plan is not None
        return min(1, self.plan.iterations - 1)

    def _end_iteration(self, rank: Rank) -> None:
        assert self.plan is not None
        plan = self.plan
        rank.iterations.append([rank.iteration, self.job.number, rank.started_ps, self.now])
        self.counters["iterations_done"] += 1
        finished = rank.iteration
        rank.iteration += 1
        if rank.iteration == plan.iterations:  # the job is over once every rank is: a failure after that is not its
            self.post({"type": "finished", "rank": rank.rank, "attempt": self.job.number, "at_ps": self.now})
        if plan.checkpoint_every and (finished + 1) % plan.checkpoint_every == 0:
            self.at(self.now + plan.checkpoint_save_ps, self._saved, (rank, rank.epoch, finished))
        elif rank.iteration < plan.iterations:
            self.at(self.now, self._begin_iteration, (rank, rank.epoch))

    def _saved(self, args: tuple[Rank, int, int]) -> None:
        rank, epoch, iteration = args
        if epoch != rank.epoch:
            return
        assert self.plan is not None
        self.post({"type": "checkpoint", "rank": rank.rank, "iteration": iteration, "attempt": self.job.number,
                   "at_ps": self.now})
        if rank.iteration < self.plan.iterations:
            self._begin_iteration((rank, rank.epoch))

    def _activity(self, rank: Rank, compute: int = 0, comm: int = 0) -> None:
        """Account the time since the last change to what was going on, then apply the change."""
        elapsed = self.now - rank.since
        if elapsed:
            if rank.computing:
                rank.compute_ps += elapsed
            if rank.communicating:
                rank.comm_ps += elapsed
                if not rank.computing:
                    rank.exposed_ps += elapsed
        rank.since = self.now
        rank.computing += compute
        rank.communicating += comm

    # -- messages ---------------------------------------------------------------------------------
    def message(self, rank: Rank, *, src: int = -1, tag: int = -1, cid: int = -1, step: int = 0) -> int:
        """The id of a message of ``rank``'s current iteration sent by ``src`` (default: the rank)."""
        return message_id(rank.serial, rank.rank if src < 0 else src, tag=tag, cid=cid, step=step)

    def link_class(self, peer: int) -> str:
        assert self.plan is not None
        device = self.plan.ranks[peer].device
        if device == self.name:
            return SCALE_UP
        return FABRIC if self.site_of[device] == self.site_of[self.name] else WAN

    def domain(self, rank: int) -> int | None:
        """The scale-up domain (supernode) of rank ``rank``'s GPU, None without OLink."""
        assert self.plan is not None
        place = self.plan.ranks[rank]
        key = (place.device, place.gpu)
        if key not in self.domain_of:
            scenario = self.context.scenario
            self.domain_of[key] = gpu_domain(scenario, scenario.device(place.device), place.gpu)
        return self.domain_of[key]

    def over_olink(self, rank: Rank, peer: int) -> bool:
        """Whether ``rank`` reaches rank ``peer`` through OLink switches."""
        if rank.gpu not in self.olink_of_gpu:
            return False
        mine = self.domain(rank.rank)
        return mine is not None and mine == self.domain(peer)

    def _olink_addresses(self, peer: int) -> list[int]:
        """Rank ``peer``'s scale-up port addresses, plane by plane (looked up once per peer)."""
        found = self.olink_peer_addresses.get(peer)
        if found is None:
            assert self.plan is not None
            place = self.plan.ranks[peer]
            scenario = self.context.scenario
            found = [self.context.address(place.device, port)
                     for port, _ in gpu_planes(scenario, scenario.device(place.device), place.gpu)]
            self.olink_peer_addresses[peer] = found
        return found

    def in_network_for(self, group: int) -> list[str] | None:
        """The switches (one per plane) that reduce for collective group ``group``, or None."""
        if group not in self.in_network:
            assert self.plan is not None
            places = [self.plan.ranks[r] for r in self.plan.groups[group]]
            found = in_network_switches(self.context.scenario, [(p.device, p.gpu) for p in places])
            self.in_network[group] = found
        return self.in_network[group]

    def account(self, rank: Rank, dim: str, link_class: str, nbytes: int) -> None:
        """Count bytes ``rank`` sends: over the run, and in the iteration whose timeline is kept."""
        self.bytes[dim][link_class] += nbytes
        if rank.iteration == self._timeline_iteration():
            self.iteration_bytes[dim][link_class] += nbytes

    def transfer(self, rank: Rank, peer: int, nbytes: int, uid: int, dim: str, done: Done, comm: int) -> None:
        """Send ``nbytes`` from ``rank`` to rank ``peer`` on communicator ``comm`` (emulators.ccl.nccl);
        ``done`` once the data is there (scale-up) or acknowledged (over the NICs)."""
        assert self.plan is not None
        olink_path = self.over_olink(rank, peer)
        link_class = SCALE_UP if olink_path else self.link_class(peer)
        self.account(rank, dim, link_class, nbytes)
        self.counters["messages_sent"] += 1
        if olink_path:
            self.olink_send(rank, [(0, max(1, nbytes), self._olink_addresses(peer))], uid, olink_spec.DATA_VC,
                            None, done)
            return
        if link_class == SCALE_UP:
            start = max(self.now, self.egress_free[rank.gpu])
            end = start + serialization_ps(nbytes, self.scale_up_bps)
            self.egress_free[rank.gpu] = end
            self.at(end + self.scale_up_latency_ps, self._arrive_locally, (uid, rank.epoch, peer, done))
            return
        if rank.nic is None:
            raise RuntimeError(f"{self.name}: GPU {rank.gpu} has no NIC, and rank {rank.rank} sends to "
                               f"rank {peer} on {self.plan.ranks[peer].device}")
        self.transport.send(rank, peer, comm, nbytes, uid, done)

    def olink_send(self, rank: Rank, pieces: list[tuple[int, int, list[int]]], uid: int, vc: int,
                   fields: dict[str, int] | None, done: Done) -> None:
        """Send the byte ranges [start, end) of message ``uid`` from ``rank``'s GPU over its OLink ports,
        each range striped over the planes, plane p's stripe to the p-th address given with it;
        ``done`` once every frame has left."""
        ports = self.olink_of_gpu[rank.gpu]
        planes = len(ports)
        parts: list[tuple[olink.OLinkPort, int, int, int]] = []
        for start, end, addresses in pieces:
            stripe = -(-(end - start) // planes)
            for p, port in enumerate(ports):
                lo, hi = start + p * stripe, min(end, start + (p + 1) * stripe)
                if lo < hi:
                    parts.append((port, addresses[p], lo, hi))
        if not parts:
            self.at(self.now, call, done)
            return
        message = _Message(len(parts), done)
        for port, dst, lo, hi in parts:
            self.olink_out[port.port.name][vc].append(_Part(uid, dst, lo, hi, vc, fields, message))
            if not port.port.busy:
                port.pump()

    def _olink_refill(self, link: olink.OLinkPort, vc: int) -> None:
        """The port's next frame on channel ``vc``: one chunk of the next message in turn."""
        parts = self.olink_out[link.port.name][vc]
        if not parts:
            return
        part = parts.popleft()
        chunk = self.olink_chunk if vc == olink_spec.DATA_VC else self.collective_chunk
        payload = min(chunk, part.end - part.offset)
        frame = Frame(DATA, part.uid, link.address, part.dst, olink_spec.wire_bytes(payload), olink_spec.PACKET_BYTES,
                      priority=part.vc, created_ps=self.now, fields=part.fields)
        frame.offset = part.offset
        part.offset += payload
        if part.offset < part.end:
            parts.append(part)
        else:
            frame.ingress = part.message  # the last frame of this part: see on_frame_sent
        link.queues[vc].append(frame)

    def _olink_accept(self, link: olink.OLinkPort, frame: Frame) -> None:
        """A frame of a message arrived on OLink: its bytes count toward the message."""
        link.release(frame.priority, frame.nbytes)  # the GPU writes it to memory at once
        uid = frame.flow
        if (uid >> SERIAL_SHIFT) in self.dead_serials:
            return
        arrived = self.olink_arrived.get(uid, 0) + frame.nbytes - olink_spec.PACKET_HEADER * frame.packets
        waiting = self.waiting.get(uid)
        if waiting is not None and arrived >= waiting[0]:
            del self.waiting[uid]
            self.olink_arrived.pop(uid, None)
            waiting[1]()
        else:
            self.olink_arrived[uid] = arrived

    def _arrive_locally(self, args: tuple[int, int, int, Done]) -> None:
        uid, epoch, peer, done = args
        target = self.ranks[peer]
        if target.epoch != epoch:
            return
        done()
        waiting = self.waiting.pop(uid, None)
        if waiting is not None:
            waiting[1]()
        else:
            self.arrived_locally.add(uid)

    def receive(self, rank: Rank, peer: int | None, nbytes: int, uid: int, comm: int, done: Done) -> bool:
        """Whether message ``uid`` of ``nbytes`` from rank ``peer`` (None: from an OLink switch) has
        already arrived at ``rank`` (then ``done`` is not called: the caller goes on); otherwise
        ``done`` is called when it has. Over the NICs the job's transport receives it on ``comm``."""
        if uid in self.arrived_locally:
            self.arrived_locally.discard(uid)
            return True
        if self.olink_arrived.get(uid, -1) >= max(1, nbytes):
            del self.olink_arrived[uid]
            return True
        if peer is not None and rank.nic is not None and not self.over_olink(rank, peer) \
                and self.link_class(peer) != SCALE_UP:
            return self.transport.recv(rank, peer, comm, nbytes, uid, done)
        self.waiting[uid] = (max(1, nbytes), done)
        return False

    # -- NIC hooks --------------------------------------------------------------------------------
    def on_qp_complete(self, qp: QueuePair) -> None:
        self.transport.on_qp_complete(qp)

    def on_qp_error(self, qp: QueuePair) -> None:
        self.transport.on_qp_error(qp)
        if self.job.aborted or self.plan is None:
            return
        reason = qp.error["reason"] if qp.error else "error"
        self.abort_job("qp_error", f"qp error on {qp.nic.name} ({qp.name}): {reason}")

    def abort_job(self, kind: str, cause: str) -> None:
        """Tell every server that this attempt failed (they abort ``detect`` from now)."""
        self.post({"type": "abort", "attempt": self.job.number, "at_ps": self.now, "device": self.name,
                   "kind": kind, "cause": cause})

    def accepts(self, flow: int) -> bool:
        """Data for an aborted attempt is only acknowledged, never kept."""
        if flow & CONNECTION_FLAG:
            return self.transport.accepts(flow)
        return (flow >> SERIAL_SHIFT) not in self.dead_serials

    def on_delivered(self, receiver: FlowReceiver) -> None:
        self.transport.on_delivered(receiver)

    def on_frame(self, port: Port, frame: Frame) -> None:
        link = self.olink.get(port.name)
        if link is not None:
            link.receive(frame)
            return
        if frame.kind == PFC:
            honour_pfc(port, frame)
            return
        self.nic_of[port.name].on_frame(port, frame)

    def on_port_idle(self, port: Port) -> None:
        link = self.olink.get(port.name)
        if link is not None:
            link.pump()
            return
        self.nic_of[port.name].pump(port)

    def on_link_change(self, port: Port) -> None:
        link = self.olink.get(port.name)
        if link is not None:
            link.link_changed()
            if link.link_up:
                self.olink_down_since.pop(port.name, None)
            elif port.name not in self.olink_down_since:
                self.olink_down_since[port.name] = self.now
                if self.plan is not None:
                    assert port.link is not None
                    self.at(self.now + self.plan.detect_ps, self._scale_up_down, (port.name, port.link.epoch))
            return
        if port.link is not None and not port.link.up:
            port.paused = 0
        self.nic_of[port.name].on_link_change(port)

    def on_frame_sent(self, port: Port, frame: Frame) -> None:
        message = frame.ingress
        if message is not None and frame.kind == DATA:  # the last frame of a part of an OLink message
            frame.ingress = None
            message.parts_left -= 1
            if not message.parts_left:
                message.done()

    def on_frame_dropped(self, port: Port, frame: Frame) -> None:
        link = self.olink.get(port.name)
        if link is not None:
            link.dropped(frame)
            self.on_frame_sent(port, frame)  # it waits in the replay buffer now
            return
        self.nic_of[port.name].on_frame_dropped(frame)

    def on_frame_lost(self, port: Port, frame: Frame) -> None:
        link = self.olink.get(port.name)
        if link is not None:
            link.lost(frame)

    # -- the job's control plane ------------------------------------------------------------------
    def post(self, payload: dict[str, Any]) -> None:
        """Tell every GPU server (this one too), ``detect`` from now."""
        assert self.plan is not None
        self.bus_seq += 1
        self.context.post(self.now + self.plan.detect_ps, (self.id << 32) | self.bus_seq, payload)

    def on_bus(self, payload: dict[str, Any]) -> None:
        if self.plan is None:
            return
        if payload["type"] == "checkpoint":
            if self.job.current(payload):
                self._checkpointed(payload)
        elif self.job.hear(payload):
            self._abort(payload)

    def _checkpointed(self, payload: dict[str, Any]) -> None:
        """A rank saved an iteration; once every rank has saved it, the checkpoint exists."""
        iteration = payload["iteration"]
        self.saved[payload["rank"]] = (iteration, payload["at_ps"])
        count = self.saves.get(iteration, 0) + 1
        self.saves[iteration] = count
        if count == len(self.saved):
            del self.saves[iteration]
            self.checkpoints.append({"iteration": iteration, "end_ps": payload["at_ps"]})
            self.checkpoint = (iteration, payload["at_ps"])

    def _abort(self, payload: dict[str, Any]) -> None:
        """Every rank stops where it is; with restart on, the job resumes after the restart time from
        the last checkpoint every rank had saved before the failure was known."""
        assert self.plan is not None
        plan = self.plan
        self.counters["job_interruptions"] += 1
        restart_iteration, checkpoint_ps = self.checkpoint[0] + 1, self.checkpoint[1]
        if restart_iteration <= self._timeline_iteration():  # it will run again: count it afresh
            self.iteration_bytes = {dim: dict.fromkeys(LINK_CLASSES, 0) for dim in DIMENSIONS}
        resumed = self.now + plan.restart_ps if plan.restart else None
        self.interruptions.append({
            "at_ps": payload["at_ps"], "device": payload["device"], "kind": payload.get("kind", "failure"),
            "cause": payload["cause"], "aborted_ps": self.now, "resumed_ps": resumed,
            "restart_iteration": restart_iteration,
            "lost_ps": (resumed - checkpoint_ps) if resumed is not None else None,
        })
        attempt = self.job.number
        self.dead_serials.update(iteration_serial(attempt, i, plan.iterations) for i in range(plan.iterations))
        for rank in self.ranks.values():
            self._activity(rank)
            rank.epoch += 1
            rank.computing = rank.communicating = 0
            rank.iteration = restart_iteration
        self.transport.abort()
        assert self.watchdog is not None
        self.watchdog.clear()
        self.waiting.clear()
        self.arrived_locally.clear()
        self.olink_arrived.clear()
        for channels in self.olink_out.values():
            for parts in channels:
                parts.clear()
        for link in self.olink.values():
            for queue in link.queues:
                queue.clear()  # not yet sent; what is in the replay buffers still gets across
        self.joins.clear()
        back = resumed if resumed is not None else self.now  # when the job is back at its checkpoint
        self.saved = {rank: (restart_iteration - 1, back) for rank in self.saved}
        self.saves.clear()
        self.checkpoint = (restart_iteration - 1, back)
        if resumed is not None:
            self.at(resumed, self._restart, None)

    def _restart(self, _: Any) -> None:
        self.job.restart()
        self.egress_free = [max(t, self.now) for t in self.egress_free]
        for rank in self.ranks.values():
            rank.since = self.now
            self._begin_iteration((rank, rank.epoch))
        assert self.plan is not None
        for name, since in self.olink_down_since.items():
            link = self.ports[name].link
            if self.now - since >= self.plan.detect_ps and link is not None:  # still broken: it fails again
                self._scale_up_down((name, link.epoch))  # (a shorter outage has its own check coming)

    def _scale_up_down(self, args: tuple[str, int]) -> None:
        """A scale-up link of a GPU with ranks has been down for the job's detect delay (since the
        link epoch ``args[1]`` began): the driver reports it and the job aborts. Shorter outages are
        retrained and replayed by the link layer, unseen by the job."""
        port, epoch = args
        link = self.ports[port].link
        parsed = olink_spec.parse_port(port)
        if self.plan is None or self.job.aborted or parsed is None or link is None or link.up or link.epoch != epoch:
            return
        if not any(rank.gpu == parsed[0] for rank in self.ranks.values()):
            return
        self.abort_job("scale_up_link", f"scale-up link {port} down")

    def gpu_busy_ps(self) -> dict[int, int]:
        """Compute time of each GPU so far, up to now (a compute op under way counts as far as it ran)."""
        busy = dict.fromkeys(range(self.gpus), 0)
        for rank in self.ranks.values():
            busy[rank.gpu] += rank.compute_ps + (self.now - rank.since if rank.computing else 0)
        return busy

    # -- results ----------------------------------------------------------------------------------
    def counter_names(self) -> list[str]:
        return super().counter_names() + olink.counter_names(self.olink)

    def counter_values(self) -> list[int]:
        return super().counter_values() + olink.counter_values(self.olink)

    def results(self) -> dict[str, Any]:
        out = super().results()
        events = sorted((e for nic in self.nics for e in nic.events), key=lambda e: (e["at_ps"], e["nic"], e["flow"]))
        if events:
            out["events"] = events  # QP timeouts, errors, plane failovers: results.json's qp_events
        if self.olink:
            out["olink"] = {name: link.counters() for name, link in self.olink.items()}
        if self.plan is None or not self.ranks:
            return out
        for rank in self.ranks.values():
            self._activity(rank)
        out["job"] = {
            "ranks": {
                str(r.rank): {
                    "gpu": r.gpu, "iterations": r.iterations, "compute_ps": r.compute_ps, "comm_ps": r.comm_ps,
                    "exposed_ps": r.exposed_ps, "timeline": r.timeline,
                }
                for r in self.ranks.values()
            },
            "bytes": self.bytes,
            "iteration_bytes": self.iteration_bytes,
            "peak_tflops": self.peak_flops_per_s / TERA, "mfu": self.mfu,
            "checkpoints": self.checkpoints,
            "interruptions": self.interruptions,
            "stopped": self.job.aborted and not self.plan.restart,
        }
        return out



def _p2p(dim: str) -> int:
    """The p2p communicator of a dimension's sends and receives (tp, pp, dp, ep; others share tp's)."""
    return p2p_comm(DIMENSIONS.index(dim) if dim in DIMENSIONS else 0)
