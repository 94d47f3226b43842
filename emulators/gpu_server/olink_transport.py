"""A GPU server's OLink scale-up ports, and the messages its GPUs send over them, frame by frame
through OLink switches, to every GPU of their scale-up domain (supernode) or to the switches that
reduce a collective in the network. A message is striped over the GPU's planes (one port each);
each port takes the chunks of its messages in turn, one virtual channel for point-to-point data and
one for in-network collectives."""

from __future__ import annotations

from collections import deque
from collections.abc import Set
from typing import TYPE_CHECKING

from emulators.gpu_server.clock import Done, call
from emulators.gpu_server.inbox import Inbox
from emulators.gpu_server.rank import Rank
from emulators.kernel.device import Device
from emulators.kernel.frame import DATA, Frame
from emulators.kernel.port import Port
from emulators.model.job import SERIAL_SHIFT
from emulators.model.scenario import Endpoint
from emulators.olink import spec as olink_spec
from emulators.olink.link import OLinkPort, counter_names, counter_values
from emulators.olink.topology import gpu_domain, gpu_planes, in_network_switches

if TYPE_CHECKING:
    from emulators.context import ScenarioContext
    from emulators.model.job import JobPlan

Piece = tuple[int, int, list[int]]  # bytes [start, end) of a message, and the address it goes to on each plane


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


class OLinkTransport:
    def __init__(self, owner: Device, chunk: int, inbox: Inbox, dead_serials: Set[int]) -> None:
        self.owner = owner  # the GPU server: it owns the ports, and they act on its clock
        self.chunk = chunk
        self.collective_chunk = chunk
        self.inbox = inbox
        self.dead_serials = dead_serials  # iteration serials of aborted attempts: their frames are dropped
        self.ports: dict[str, OLinkPort] = {}
        self.of_gpu: dict[int, list[OLinkPort]] = {}
        self.out: dict[str, list[deque[_Part]]] = {}  # port -> per channel: parts it sends, in turn
        self.domain_of: dict[tuple[str, int], int | None] = {}  # (server, gpu) -> its scale-up domain
        self.in_network: dict[int, list[str] | None] = {}  # collective group -> its reducing switches
        self.peer_addresses: dict[int, list[int]] = {}  # rank -> its scale-up port addresses
        self.plan: JobPlan | None = None

    def configure(self, context: ScenarioContext) -> None:
        self.context = context
        owner = self.owner
        scenario = context.scenario
        self.plan = scenario.job
        me = scenario.device(owner.name)
        chunk = olink_spec.largest_chunk(scenario.devices)
        timeout = olink_spec.replay_timeout(owner.kind, owner.options)
        for gpu, names in olink_spec.scale_up_ports(owner.ports).items():
            for pname in names:
                port = owner.ports[pname]
                far = context.peer_of.get(Endpoint(owner.name, pname))
                if far is None or port.link is None:
                    continue
                switch = scenario.device(far.device)
                far_credit = olink_spec.credit(switch.kind, switch.options, chunk)
                vcs = int(switch.options.get("vcs", olink_spec.DEFAULT_VCS))
                link = OLinkPort(
                    owner, port, context.address(owner.name, pname), context.address(far), vcs=vcs,
                    own_credit=olink_spec.credit(owner.kind, owner.options, chunk), far_credit=far_credit,
                    replay_buffer=olink_spec.replay_buffer(owner.kind, owner.options, chunk),
                    largest_wire_bytes=olink_spec.wire_bytes(chunk), replay_timeout_ps=timeout,
                    accept=self._accept, refill=self._refill)
                self.ports[pname] = link
                self.of_gpu.setdefault(gpu, []).append(link)
                self.out[pname] = [deque() for _ in range(vcs)]
        # in-network contributions are matched chunk by chunk at the switch: every member cuts alike
        self.collective_chunk = chunk
        for gpu in self.of_gpu:
            self.domain_of[(owner.name, gpu)] = gpu_domain(scenario, me, gpu)

    # -- where OLink reaches ----------------------------------------------------------------------
    def domain(self, rank: int) -> int | None:
        """The scale-up domain (supernode) of rank ``rank``'s GPU, None without OLink."""
        assert self.plan is not None
        place = self.plan.ranks[rank]
        key = (place.device, place.gpu)
        if key not in self.domain_of:
            scenario = self.context.scenario
            self.domain_of[key] = gpu_domain(scenario, scenario.device(place.device), place.gpu)
        return self.domain_of[key]

    def reaches(self, rank: Rank, peer: int) -> bool:
        """Whether ``rank`` reaches rank ``peer`` through OLink switches."""
        if rank.gpu not in self.of_gpu:
            return False
        mine = self.domain(rank.rank)
        return mine is not None and mine == self.domain(peer)

    def addresses(self, peer: int) -> list[int]:
        """Rank ``peer``'s scale-up port addresses, plane by plane (looked up once per peer)."""
        found = self.peer_addresses.get(peer)
        if found is None:
            assert self.plan is not None
            place = self.plan.ranks[peer]
            scenario = self.context.scenario
            found = [self.context.address(place.device, port)
                     for port, _ in gpu_planes(scenario, scenario.device(place.device), place.gpu)]
            self.peer_addresses[peer] = found
        return found

    def in_network_addresses(self, group: int) -> list[int] | None:
        """The addresses of the switches (one per plane) that reduce for collective group ``group``, or None."""
        if group not in self.in_network:
            assert self.plan is not None
            places = [self.plan.ranks[r] for r in self.plan.groups[group]]
            self.in_network[group] = in_network_switches(self.context.scenario, [(p.device, p.gpu) for p in places])
        switches = self.in_network[group]
        return None if switches is None else [self.context.address(name) for name in switches]

    # -- sending ----------------------------------------------------------------------------------
    def send(self, rank: Rank, pieces: list[Piece], uid: int, vc: int, fields: dict[str, int] | None,
             done: Done) -> None:
        """Send the byte ranges [start, end) of message ``uid`` from ``rank``'s GPU over its OLink ports,
        each range striped over the planes, plane p's stripe to the p-th address given with it;
        ``done`` once every frame has left."""
        ports = self.of_gpu[rank.gpu]
        planes = len(ports)
        parts: list[tuple[OLinkPort, int, int, int]] = []
        for start, end, addresses in pieces:
            stripe = -(-(end - start) // planes)
            for p, port in enumerate(ports):
                lo, hi = start + p * stripe, min(end, start + (p + 1) * stripe)
                if lo < hi:
                    parts.append((port, addresses[p], lo, hi))
        if not parts:
            self.owner.at(self.owner.now, call, done)
            return
        message = _Message(len(parts), done)
        for port, dst, lo, hi in parts:
            self.out[port.port.name][vc].append(_Part(uid, dst, lo, hi, vc, fields, message))
            if not port.port.busy:
                port.pump()

    def _refill(self, link: OLinkPort, vc: int) -> None:
        """The port's next frame on channel ``vc``: one chunk of the next message in turn."""
        parts = self.out[link.port.name][vc]
        if not parts:
            return
        part = parts.popleft()
        chunk = self.chunk if vc == olink_spec.DATA_VC else self.collective_chunk
        payload = min(chunk, part.end - part.offset)
        frame = Frame(DATA, part.uid, link.address, part.dst, olink_spec.wire_bytes(payload), olink_spec.PACKET_BYTES,
                      priority=part.vc, created_ps=self.owner.now, fields=part.fields)
        frame.offset = part.offset
        part.offset += payload
        if part.offset < part.end:
            parts.append(part)
        else:
            frame.ingress = part.message  # the last frame of this part: see frame_sent
        link.queues[vc].append(frame)

    def frame_sent(self, frame: Frame) -> None:
        """``frame`` left its port (on any of the server's ports)."""
        message = frame.ingress
        if message is not None and frame.kind == DATA:  # the last frame of a part of an OLink message
            frame.ingress = None
            message.parts_left -= 1
            if not message.parts_left:
                message.done()

    # -- receiving --------------------------------------------------------------------------------
    def _accept(self, link: OLinkPort, frame: Frame) -> None:
        """A frame of a message arrived on OLink: its bytes count toward the message."""
        link.release(frame.priority, frame.nbytes)  # the GPU writes it to memory at once
        if (frame.flow >> SERIAL_SHIFT) in self.dead_serials:
            return
        self.inbox.received(frame.flow, frame.nbytes - olink_spec.PACKET_HEADER * frame.packets)

    def port_of(self, port: Port) -> OLinkPort | None:
        return self.ports.get(port.name)

    def abort(self) -> None:
        """Forget what the aborted attempt had not yet sent; what is in the replay buffers still gets across."""
        for channels in self.out.values():
            for parts in channels:
                parts.clear()
        for link in self.ports.values():
            for queue in link.queues:
                queue.clear()

    # -- results ----------------------------------------------------------------------------------
    def counter_names(self) -> list[str]:
        return counter_names(self.ports)

    def counter_values(self) -> list[int]:
        return counter_values(self.ports)
