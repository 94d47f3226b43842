"""The OLink switch: the scale-up fabric of a supernode.

Every port runs the OLink link layer (:mod:`emulators.olink.link`): credits per virtual channel and
link-level retry. A frame that arrives intact and in order waits ``latency``, then joins the egress
queue of the port toward its destination (one of them, by a hash of the message and the offset, when
several lead there). It keeps its credit at the ingress until its last bit has left the egress, so a
port that many GPUs send to fills their credit, not a buffer, and nothing is lost.

With ``in_network`` on, the switch also reduces and replicates for collectives whose members all
hang off it (one switch per plane), the way in-switch reduction engines do:

- all-reduce: every member sends its whole buffer once, addressed to the switch; when the same
  chunk has come from every member, the switch sends the reduced chunk to every member;
- reduce-scatter: the same, but the reduced chunk goes only to the member that owns that piece;
- all-gather: every member sends its piece once and the switch copies it to every other member.

A contribution moves from the ingress buffer into the reduction engine's own memory as it arrives,
so its credit goes back at once: collectives of different groups, or started in different orders,
never wait on each other's buffer space. Results then queue for their egress like any frame.
``reduction_peak_bytes`` shows how much the engine held at most (members that fall behind make it
grow). Contributions of an attempt the job has aborted are dropped (the job's bus says when).

The switch forwards around a parallel link that is down, but it does not reroute beyond itself:
frames already queued on a trunk (a link to another OLink switch) when it fails, or sent toward GPUs
it can reach only over that trunk (a spine's only link to a leaf), wait for it. Once the trunk has
been down for the job's ``detect`` delay, the switch reports the fault to the job, as a GPU does
for its own scale-up link, if the job needs the trunk: frames of the job wait on it, or it cuts the
switch off from GPUs of the job that talk (a collective group, a send/receive) to GPUs the switch
still reaches. It checks again when the job restarts, and whenever the job sends onto the trunk.
Shorter outages are retrained and replayed by the link layer, unseen by the job, and so is a trunk
that the job does not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emulators.kernel.device import Device
from emulators.kernel.engine import Engine
from emulators.kernel.frame import DATA, Frame
from emulators.kernel.port import Port
from emulators.model.job import SERIAL_SHIFT, JobAttempt, iteration_serial, with_sender
from emulators.model.scenario import Endpoint
from emulators.olink import spec
from emulators.olink.link import OLinkPort, counter_names, counter_values
from emulators.olink.topology import gpu_planes

if TYPE_CHECKING:
    from emulators.context import ScenarioContext

ALL_REDUCE, ALL_GATHER, REDUCE_SCATTER = 1, 2, 3  # the ``innet`` field of a contribution


class OLinkSwitch(Device):
    kind = spec.KIND

    def __init__(self, name: str, device_id: int, engine: Engine, seed: int,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(name, device_id, engine, seed, options)
        opts = self.options
        self.latency_ps = int(opts.get("latency", spec.DEFAULT_LATENCY_PS))
        self.vcs = int(opts.get("vcs", spec.DEFAULT_VCS))
        self.in_network = bool(opts.get("in_network", False))
        self.credit = self.replay_buffer = 0  # set in configure: their defaults follow the scenario's frames
        self.links: dict[str, OLinkPort] = {}
        self.routes: dict[int, tuple[OLinkPort, ...]] = {}
        self.reductions: dict[tuple[int, int], int] = {}  # (message, offset) -> contributions held
        self.reduction_sizes: dict[tuple[int, int], int] = {}  # (message, offset) -> its chunk's bytes
        self.reduction_bytes = 0  # contributions held by the reduction engine
        self.members: dict[int, list[tuple[int, int]]] = {}  # group -> (port address here, rank) of its members
        self.dead_serials: set[int] = set()
        self.trunks: list[str] = []  # ports toward another OLink switch
        self.trunk_down_since: dict[str, int] = {}
        self.reported = -1  # the last attempt this switch reported a trunk fault to
        self.job = JobAttempt(0)  # the job's attempt, as its bus tells it
        self.bus_seq = 0
        self.counters.update(forwarded_frames=0, unroutable_frames=0, reduced_chunks=0, replicated_frames=0,
                             abandoned_chunks=0,  # of reductions an aborted attempt left unfinished
                             reduction_peak_bytes=0)

    # -- set-up -----------------------------------------------------------------------------------
    def configure(self, context: ScenarioContext) -> None:
        self.context = context
        scenario = context.scenario
        chunk = spec.largest_chunk(scenario.devices)
        self.credit = spec.credit(self.kind, self.options, chunk)
        self.replay_buffer = spec.replay_buffer(self.kind, self.options, chunk)
        largest = spec.wire_bytes(chunk)
        timeout = spec.replay_timeout(self.kind, self.options)
        for pname, port in self.ports.items():
            far = context.peer_of.get(Endpoint(self.name, pname))
            if far is None or port.link is None:
                continue
            far_spec = scenario.device(far.device)
            far_credit = spec.credit(far_spec.kind, far_spec.options, chunk)
            vcs = self.vcs  # a GPU uses its switch's; two switches the channels both have
            if far_spec.kind == spec.KIND:
                vcs = min(vcs, int(far_spec.options.get("vcs", spec.DEFAULT_VCS)))
                self.trunks.append(pname)
            self.links[pname] = OLinkPort(
                self, port, context.address(self.name, pname), context.address(far), vcs=vcs,
                own_credit=self.credit, far_credit=far_credit, replay_buffer=self.replay_buffer,
                largest_wire_bytes=largest, replay_timeout_ps=timeout, accept=self._accept)
        self.routes = {
            dst: tuple(self.links[p] for p in names if p in self.links)
            for dst, names in context.routes(self.name).items()
        }
        self.plan = scenario.job
        if self.plan is not None:
            self.job = JobAttempt(len(self.plan.ranks))

    # -- forwarding -------------------------------------------------------------------------------
    def on_frame(self, port: Port, frame: Frame) -> None:
        link = self.links.get(port.name)
        if link is not None:
            link.receive(frame)

    def on_frame_lost(self, port: Port, frame: Frame) -> None:
        link = self.links.get(port.name)
        if link is not None:
            link.lost(frame)

    def _accept(self, ingress: OLinkPort, frame: Frame) -> None:
        self.at(self.engine.now + self.latency_ps, self._forward, (ingress, frame))

    def _forward(self, args: tuple[OLinkPort, Frame]) -> None:
        ingress, frame = args
        if frame.fields is not None and "innet" in frame.fields:
            self._contribute(ingress, frame)
            return
        egress = self.routes.get(frame.dst)
        if not egress:
            self.counters["unroutable_frames"] += 1
            ingress.release(frame.priority, frame.nbytes)
            return
        if len(egress) > 1:
            up = [port for port in egress if port.link_up]
            egress = tuple(up) or egress  # all down: wait for one to return
        out = egress[0] if len(egress) == 1 else egress[_spread(frame.flow, frame.offset) % len(egress)]
        frame.ingress = ingress
        self.counters["forwarded_frames"] += 1
        self._enqueue(out, frame)

    def on_frame_sent(self, port: Port, frame: Frame) -> None:
        holder = frame.ingress
        if holder is not None and frame.kind == DATA:
            frame.ingress = None
            holder.release(frame.priority, frame.nbytes)

    def on_frame_dropped(self, port: Port, frame: Frame) -> None:
        link = self.links.get(port.name)
        if link is not None:
            link.dropped(frame)
        self.on_frame_sent(port, frame)  # it waits in the replay buffer now, not in our queues

    def on_port_idle(self, port: Port) -> None:
        link = self.links.get(port.name)
        if link is not None:
            link.pump()

    def on_link_change(self, port: Port) -> None:
        link = self.links.get(port.name)
        if link is None:
            return
        link.link_changed()
        if port.name not in self.trunks:
            return
        if link.link_up:
            self.trunk_down_since.pop(port.name, None)
        elif port.name not in self.trunk_down_since:
            assert port.link is not None
            self.trunk_down_since[port.name] = self.engine.now
            if self.plan is not None:
                self.at(self.engine.now + self.plan.detect_ps, self._trunk_down, (port.name, port.link.epoch))

    # -- faults the job must hear of --------------------------------------------------------------
    def _trunk_down(self, args: tuple[str, int]) -> None:
        """A trunk has been down since its link epoch ``args[1]`` began, for the job's detect delay."""
        name, epoch = args
        link = self.ports[name].link
        if link is not None and not link.up and link.epoch == epoch:
            self._check_trunks()

    def _enqueue(self, out: OLinkPort, frame: Frame) -> None:
        out.enqueue(frame)
        if not out.link_up and out.port.name in self.trunk_down_since:
            self._check_trunks(out)

    def _check_trunks(self, trunk: OLinkPort | None = None) -> None:
        """Tell the job (on its bus, ``detect`` from now), once per attempt, when a trunk down for at
        least its detect delay holds it up: frames of its current attempt wait on the trunk, or
        the trunk cuts this switch off from GPUs of the job that talk to GPUs it still reaches.
        With ``trunk``, look only for frames waiting on that one (one has just been queued)."""
        plan = self.plan
        if plan is None or self.job.aborted or self.job.over or self.reported == self.job.number:
            return
        now = self.engine.now
        down = [self.links[n] for n, since in self.trunk_down_since.items() if now - since >= plan.detect_ps]
        cause = ""
        for t in [trunk] if trunk is not None else down:
            if t in down and (stuck := self._waiting_frames(t)):
                cause = f"scale-up trunk {t.port.name} down: {stuck} frames of the job stuck on it"
                break
        if not cause and trunk is None and down:
            cut, lost = self._cut_off(down)
            if lost:
                cause = f"scale-up trunk {', '.join(cut)} down: {lost} GPUs of the job out of reach"
        if not cause:
            return
        self.reported = self.job.number
        self.bus_seq += 1
        self.context.post(now + plan.detect_ps, (self.id << 32) | self.bus_seq, {
            "type": "abort", "attempt": self.job.number, "at_ps": now, "device": self.name, "kind": "olink_trunk",
            "cause": cause})

    def _waiting_frames(self, trunk: OLinkPort) -> int:
        """Frames of the job's live attempts queued on ``trunk`` or waiting in its replay buffer."""
        dead = self.dead_serials
        waiting = [f for queue in trunk.queues for f in queue] + [sent.frame for sent in trunk.unacked]
        return sum(1 for f in waiting if f.kind == DATA and (f.flow >> SERIAL_SHIFT) not in dead)

    def _cut_off(self, down: list[OLinkPort]) -> tuple[list[str], int]:
        """The trunks among ``down`` that are every way left to some GPUs of the job, and how many of
        those GPUs talk (a collective group or a send/receive) to GPUs this switch still reaches."""
        plan = self.plan
        assert plan is not None
        scenario = self.context.scenario
        lost: set[int] = set()
        reached: set[int] = set()
        cut: set[str] = set()
        for rank, place in enumerate(plan.ranks):
            for port, _ in gpu_planes(scenario, scenario.device(place.device), place.gpu):
                egress = self.routes.get(self.context.address(place.device, port))
                if not egress:
                    continue  # another plane's
                if any(p.link_up for p in egress):
                    reached.add(rank)
                elif any(p in down for p in egress):
                    lost.add(rank)
                    cut.update(p.port.name for p in egress if p in down)
        groups: dict[int, list[int]] = {}  # rank -> its collective groups
        peers: dict[int, set[int]] = {}  # rank -> the ranks it sends to or receives from
        for g, members in enumerate(plan.groups):
            for rank in members:
                groups.setdefault(rank, []).append(g)
        for rank, program in enumerate(plan.programs):
            for op in program:
                if op.peer >= 0:
                    peers.setdefault(rank, set()).add(op.peer)
                    peers.setdefault(op.peer, set()).add(rank)
        heard = [rank for rank in sorted(lost)
                 if peers.get(rank, set()) & reached
                 or any(reached.intersection(plan.groups[g]) for g in groups.get(rank, ()))]
        return sorted(cut), len(heard)

    def _resumed(self, _: Any) -> None:
        """The job restarts now: a trunk still down fails it again."""
        self.job.restart()
        self._check_trunks()

    # -- in-network collectives -------------------------------------------------------------------
    def _contribute(self, ingress: OLinkPort, frame: Frame) -> None:
        fields = frame.fields
        assert fields is not None
        ingress.release(frame.priority, frame.nbytes)  # into the reduction engine's memory
        if not self.in_network:
            self.counters["unroutable_frames"] += 1
            return
        if (frame.flow >> SERIAL_SHIFT) in self.dead_serials:
            return
        members = self._members(fields["group"])
        op = fields["innet"]
        if op == ALL_GATHER:
            targets = [m for m in members if m[0] != frame.src]
            self.counters["replicated_frames"] += len(targets)
            self._emit(frame, targets)
            return
        key = (frame.flow, frame.offset)
        count = self.reductions.get(key, 0) + 1
        if count < len(members):
            self.reductions[key] = count
            self.reduction_sizes[key] = frame.nbytes
            self.reduction_bytes += frame.nbytes
            if self.reduction_bytes > self.counters["reduction_peak_bytes"]:
                self.counters["reduction_peak_bytes"] = self.reduction_bytes
            return
        self.reductions.pop(key, None)
        self.reduction_sizes.pop(key, None)
        self.reduction_bytes -= (count - 1) * frame.nbytes  # every member cuts alike: same-size chunks
        self.counters["reduced_chunks"] += 1
        if op == ALL_REDUCE:
            targets = members
        else:
            piece = -(-fields["size"] // len(members))
            targets = [members[frame.offset // piece]]
        self._emit(frame, targets)

    def _emit(self, frame: Frame, targets: list[tuple[int, int]]) -> None:
        """Send the result chunk to each (port address, rank) of ``targets``, as that rank's message."""
        for dst, rank in targets:
            copy = Frame(DATA, with_sender(frame.flow, rank), self.context.address(self.name), dst, frame.nbytes,
                         frame.mtu, priority=frame.priority, created_ps=self.engine.now, op=frame.op)
            copy.offset = frame.offset
            egress = self.routes.get(dst)
            if not egress:
                self.counters["unroutable_frames"] += 1
                continue
            self._enqueue(egress[0], copy)

    def _members(self, group: int) -> list[tuple[int, int]]:
        """(port address here, rank) of a collective group's members, in group order."""
        found = self.members.get(group)
        if found is None:
            assert self.plan is not None
            scenario = self.context.scenario
            found = []
            for rank in self.plan.groups[group]:
                place = self.plan.ranks[rank]
                for port, switch in gpu_planes(scenario, scenario.device(place.device), place.gpu):
                    if switch == self.name:
                        found.append((self.context.address(place.device, port), rank))
            self.members[group] = found
        return found

    def on_bus(self, payload: dict[str, Any]) -> None:
        """An aborted attempt never completes its reductions: free what they hold. The job restarts
        ``restart`` later, as the GPU servers do on the same message (unless it was over)."""
        plan = self.plan
        if plan is None or payload["type"] not in ("finished", "abort"):
            return
        if self.job.hear(payload) and plan.restart:
            self.at(self.engine.now + plan.restart_ps, self._resumed, None)
        if payload["type"] != "abort":
            return
        self.dead_serials.update(iteration_serial(payload["attempt"], i, plan.iterations)
                                 for i in range(plan.iterations))
        for key in [k for k in self.reductions if (k[0] >> SERIAL_SHIFT) in self.dead_serials]:
            del self.reductions[key]
            self.reduction_sizes.pop(key, None)
            self.counters["abandoned_chunks"] += 1
        self.reduction_bytes = sum(self.reduction_sizes.get(k, 0) * n for k, n in self.reductions.items())

    # -- counters and results ---------------------------------------------------------------------
    def counter_names(self) -> list[str]:
        return super().counter_names() + counter_names(self.links)

    def counter_values(self) -> list[int]:
        return super().counter_values() + counter_values(self.links)

    def results(self) -> dict[str, Any]:
        out = super().results()
        out["olink"] = {name: link.counters() for name, link in self.links.items()}
        out["settings"] = {"latency_ps": self.latency_ps, "vcs": self.vcs, "credit_bytes": self.credit,
                           "replay_buffer_bytes": self.replay_buffer, "in_network": self.in_network}
        return out


def _spread(flow: int, offset: int) -> int:
    """A hash of a message and an offset: frames of one message spread over parallel paths."""
    value = (flow * 0x9E3779B97F4A7C15 + offset * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return value >> 33
