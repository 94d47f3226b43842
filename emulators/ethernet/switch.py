"""The Ethernet leaf/spine switch, in RoCE mode (ECMP, shared buffer with PFC, ECN) or GSE mode
(the leaf cuts, queues, requests, sprays and reorders; see emulators.ethernet.gse).

A frame that arrives is charged to the shared buffer at once (PFC must see it when it lands), and
leaves the forwarding pipeline ``latency`` later into its egress queue. PFC frames act on the MAC
immediately and are never forwarded; control frames addressed to the switch are its own signalling.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

from emulators.ethernet.defaults import DEFAULTS, GSE_DEFAULTS, XON_BELOW_XOFF
from emulators.ethernet.gse import GseLeaf
from emulators.ethernet.mmu import HEADROOM_FRAME_BYTES, EcnMarker, SharedBuffer, default_headroom
from emulators.kernel.device import Device
from emulators.kernel.engine import Engine
from emulators.kernel.frame import CONTROL_PRIORITY, DATA, PFC, Frame, device_of, honour_pfc, pfc_frame
from emulators.kernel.port import PRIORITIES, Port
from emulators.kernel.rng import stream_for
from emulators.kernel.vtime import NEVER
from emulators.model.faults import LinkChange, LinkState
from emulators.model.scenario import Endpoint

if TYPE_CHECKING:
    from emulators.context import ScenarioContext

UNLIMITED = NEVER  # the kernel's tail drop is off: the MMU decides admission

COUNTERS = (
    "buffer_bytes", "buffer_peak_bytes", "ingress_peak_bytes",
    "no_route_frames", "consumed_frames", "reroutes",
    "drop_headroom_frames", "drop_headroom_bytes",  # lossless, after XOFF, beyond the headroom
    "drop_lossy_frames", "drop_lossy_bytes",  # lossy, over the dynamic threshold or no buffer left
    "drop_buffer_frames", "drop_buffer_bytes",  # lossless, shared buffer full
    "pfc_xoff_sent", "pfc_xon_sent", "pfc_pause_received",
    "ecn_marked_frames",
    # GSE
    "requests_sent", "requests_received", "grants_sent", "grants_received", "grants_unused",
    "containers_sent", "containers_resprayed", "dgsq_bytes",
    "reorder_frames", "reorder_bytes", "reorder_peak_bytes", "reordered_containers",
    "late_containers", "reorder_timeouts", "requests_restated", "grants_expired",
)


class Switch(Device):
    kind = "switch"
    option_defaults: dict[str, Any] = DEFAULTS  # subclasses (gateway, OTN node) start from their own

    def __init__(self, name: str, device_id: int, engine: Engine, seed: int,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(name, device_id, engine, seed, options)
        setting = self.option_defaults | (GSE_DEFAULTS if self.options.get("mode") == "gse" else {}) | self.options
        self.role: str = setting["role"]
        self.mode: str = setting["mode"]
        self.buffer_size = int(setting["buffer"])
        self.latency_ps = int(setting["latency"])
        self.pfc = bool(setting["pfc"])
        self.lossless = frozenset(int(p) for p in setting["lossless_priorities"]) if self.pfc else frozenset()
        self.setting = setting
        self.pfc_xoff = int(setting["pfc_xoff"])
        self.pfc_xon = int(setting.get("pfc_xon", max(0, self.pfc_xoff - XON_BELOW_XOFF)))
        self.pfc_headroom_option: int | None = setting.get("pfc_headroom")
        self.lossy_alpha = float(setting["lossy_alpha"])
        self.ecn = bool(setting["ecn"])
        self.ecn_kmin = int(setting["ecn_kmin"])
        self.ecn_kmax = int(setting["ecn_kmax"])
        self.ecn_pmax = float(setting["ecn_pmax"])
        self.gse_container = int(setting["gse_container"])
        self.gse_credit = int(setting["gse_credit"])
        self.reconvergence_ps = int(setting["reconvergence"])
        self.port_buffer_bytes = UNLIMITED
        self.counters.update(dict.fromkeys(COUNTERS, 0))
        self.ecn_marker = EcnMarker(self.ecn_kmin, self.ecn_kmax, self.ecn_pmax, self.rng) if self.ecn else None
        self._salt = stream_for(seed, f"ecmp:{name}").bytes(16)  # per switch: no hash polarisation
        self._hashes: dict[tuple[int, int, int], int] = {}
        # set in configure, once the ports are linked
        self.port_index: dict[str, int] = {}
        self.port_list: list[Port] = []
        self.port_address: list[int] = []
        self.peer_address: list[int] = []
        self.nic_facing: list[bool] = []
        self.headroom: list[int] = []
        self.routes: dict[int, tuple[Port, ...]] = {}
        self.mmu: SharedBuffer
        self.gse: GseLeaf | None = None

    # -- set-up -----------------------------------------------------------------------------------
    def configure(self, context: ScenarioContext) -> None:
        self.largest_frame = max(HEADROOM_FRAME_BYTES, context.largest_chunk)
        if self.kind == "switch":  # a gateway's or OTN node's thresholds follow the WAN, not the frame
            self._scale_thresholds(self.largest_frame / HEADROOM_FRAME_BYTES)
        for index, (pname, port) in enumerate(self.ports.items()):
            port.buffer_bytes = UNLIMITED
            self.port_index[pname] = index
            assert port.index == index, f"{self.name}:{pname} is port {port.index}, not {index}"
            self.port_list.append(port)
            self.port_address.append(context.address(self.name, pname))
            peer = context.peer_of.get(Endpoint(self.name, pname))
            self.peer_address.append(context.address(peer) if peer is not None else -1)
            self.nic_facing.append(peer is not None and peer.device not in context.forwarders)
            self.headroom.append(self._headroom_for(port))
        self.routes = {dst: tuple(self.ports[p] for p in names) for dst, names in context.routes(self.name).items()}
        self.mmu = SharedBuffer(self.buffer_size, len(self.ports), self.lossless, self.pfc_xoff, self.pfc_xon,
                                self.headroom, self.lossy_alpha, self.counters, self._send_pfc)
        if self.mode == "gse" and self.role == "leaf":
            self.gse = GseLeaf(self, context, self.gse_container, self.gse_credit)
        if self.kind == "switch":
            self._plan_reconvergence(context)

    def _scale_thresholds(self, frames: float) -> None:
        """Defaults (not written options) spanning ``frames`` times as many bytes: the largest chunk
        over the 64 KiB frames they were set for (see the note above ``Switch``)."""
        if frames <= 1:
            return
        written, setting = self.options, self.setting

        def scaled(key: str) -> int:
            return round(int(setting[key]) * frames)

        if "buffer" not in written:  # room for as many frames, and for the scaled reservations
            self.buffer_size = scaled("buffer")
        if "pfc_xoff" not in written:
            self.pfc_xoff = scaled("pfc_xoff")
        if "pfc_xon" not in written and "pfc_xoff" not in written:
            self.pfc_xon = max(0, self.pfc_xoff - round(XON_BELOW_XOFF * frames))
        if "ecn_kmin" not in written:
            self.ecn_kmin = scaled("ecn_kmin")
        if "ecn_kmax" not in written:
            self.ecn_kmax = scaled("ecn_kmax")
        if self.ecn:
            self.ecn_marker = EcnMarker(self.ecn_kmin, self.ecn_kmax, self.ecn_pmax, self.rng)

    def _plan_reconvergence(self, context: ScenarioContext) -> None:
        """Routing converges ``reconvergence`` after each link state change on the timeline: every
        switch then routes around what is down (it sees its own links at once). The timeline is the
        same on every host, so every partition reroutes alike."""
        faults = context.scenario.faults
        changes = sorted((f.at_ps, f.index, f.link, f.state) for f in faults if isinstance(f, LinkState))
        self._context = context
        self._state_changes = changes
        self._reroutes_planned = {c[0] for c in changes}
        for at_ps in sorted(self._reroutes_planned):
            self.at_planned(at_ps + self.reconvergence_ps, at_ps, self._reroute, at_ps)

    def on_fault_added(self, fault: LinkChange) -> None:
        """A link state change injected into a running scenario: converge on it like on the timeline's."""
        if self.kind != "switch" or not isinstance(fault, LinkState):
            return
        self._state_changes = sorted([*self._state_changes, (fault.at_ps, fault.index, fault.link, fault.state)])
        if fault.at_ps not in self._reroutes_planned:
            self._reroutes_planned.add(fault.at_ps)
            self.at_planned(fault.at_ps + self.reconvergence_ps, fault.at_ps, self._reroute, fault.at_ps)

    def _reroute(self, as_of_ps: int) -> None:
        down: set[str] = set()
        for at_ps, _, link, state in self._state_changes:
            if at_ps > as_of_ps:
                break
            if state == "down":
                down.add(link)
            else:
                down.discard(link)
        routes = self._context.routes(self.name, frozenset(down))
        self.routes = {dst: tuple(self.ports[p] for p in names) for dst, names in routes.items()}
        self.counters["reroutes"] += 1

    def _headroom_for(self, port: Port) -> int:
        if self.pfc_headroom_option is not None:
            return int(self.pfc_headroom_option)
        link = port.link
        return default_headroom(link.rate_bps, link.propagation_ps, self.largest_frame) if link is not None else 0

    # -- ingress ----------------------------------------------------------------------------------
    def on_frame(self, port: Port, frame: Frame) -> None:
        if frame.kind == PFC:
            honour_pfc(port, frame)
            if frame.fields is not None and frame.fields["pause"]:
                self.counters["pfc_pause_received"] += 1
            elif self.gse is not None:
                self.gse.resume_grants(port)  # a NIC that resumed may take grants again
            return
        frame.ingress = None  # whatever the previous switch kept there is not ours
        if device_of(frame.dst) == self.id:
            self.after_pipeline(self._on_signal, frame)
            return
        in_port = port.index
        if self.gse is not None and frame.kind == DATA and self.gse.claims(in_port, frame):
            return
        egress = self.route(frame)
        if egress is None:
            self.counters["no_route_frames"] += 1
            return
        if self.admit(frame, in_port, egress):
            self.after_pipeline(self._forward, frame)

    def admit(self, frame: Frame, in_port: int, egress: Port) -> bool:
        """Charge the frame to the shared buffer (control frames ride free) and remember its egress."""
        if frame.priority >= CONTROL_PRIORITY:
            frame.ingress = (-1, None, egress)
            return True
        queue = self.mmu.egress[egress.index][frame.priority]
        return self.mmu.admit(frame, in_port, queue, egress)

    def after_pipeline(self, handler: Callable[[Frame], None], frame: Frame) -> None:
        if self.latency_ps:
            self.at(self.engine.now + self.latency_ps, handler, frame)
        else:
            handler(frame)

    def _on_signal(self, frame: Frame) -> None:
        if self.gse is None or not self.gse.on_signal(frame):
            self.counters["consumed_frames"] += 1

    def _forward(self, frame: Frame) -> None:
        self.enqueue(frame.ingress[2], frame)

    # -- routing ----------------------------------------------------------------------------------
    def route(self, frame: Frame) -> Port | None:
        ports = self.routes.get(frame.dst)
        if not ports:
            return None
        return self.ecmp_choice(ports, frame.src, frame.dst, frame.entropy)

    def ecmp_choice(self, ports: tuple[Port, ...], src: int, dst: int, entropy: int) -> Port | None:
        """One of the ports whose link is up, by a salted hash of the flow's addresses and entropy."""
        if len(ports) == 1:  # most routes have one next hop: no list, no hash
            port = ports[0]
            return port if port.link is not None and port.link.up else None
        up = [p for p in ports if p.link is not None and p.link.up]
        if len(up) <= 1:
            return up[0] if up else None
        return up[self.ecmp_hash(src, dst, entropy) % len(up)]

    def ecmp_hash(self, src: int, dst: int, entropy: int) -> int:
        key = (src, dst, entropy)
        value = self._hashes.get(key)
        if value is None:
            # keyed BLAKE2b, not CRC: a CRC's salt only XORs a constant in, so low bits would be
            # permuted alike at every switch and tiers would polarise
            digest = blake2b(struct.pack("<QQQ", src, dst, entropy), digest_size=8, key=self._salt).digest()
            value = self._hashes[key] = int.from_bytes(digest, "little")
        return value

    # -- egress -----------------------------------------------------------------------------------
    def enqueue(self, port: Port, frame: Frame) -> None:
        """Into the port's priority queue; data frames may get an ECN mark on the queue they find."""
        queue = self.mmu.egress[port.index][frame.priority]
        marker = self.ecn_marker
        if marker is not None and frame.kind == DATA and marker.mark(queue.queued):
            frame.ecn = True
            self.counters["ecn_marked_frames"] += 1
        queue.queued += frame.nbytes
        port.send(frame)

    def send_control(self, frame: Frame) -> None:
        """Our own signalling (request/grant), routed like any control frame."""
        egress = self.route(frame)
        if egress is None:
            self.counters["no_route_frames"] += 1
            return
        self.enqueue(egress, frame)

    def _send_pfc(self, in_port: int, priority: int, pause: bool) -> None:
        port = self.port_list[in_port]
        if port.link is None:
            return
        frame = pfc_frame(self.port_address[in_port], self.peer_address[in_port], priority, pause, self.engine.now)
        self.counters["pfc_xoff_sent" if pause else "pfc_xon_sent"] += 1
        self.enqueue(port, frame)

    def on_frame_sent(self, port: Port, frame: Frame) -> None:
        self._unqueue(port, frame)
        self._release(frame)
        if self.gse is not None:
            self.gse.resume_grants(port)

    def on_frame_dropped(self, port: Port, frame: Frame) -> None:
        self._unqueue(port, frame)
        if self.gse is not None and self.gse.respray(frame):
            return
        self._release(frame)

    def _unqueue(self, port: Port, frame: Frame) -> None:
        self.mmu.egress[port.index][frame.priority].queued -= frame.nbytes

    def _release(self, frame: Frame) -> None:
        ingress = frame.ingress
        if ingress is None:
            return
        if ingress[1] is None:
            frame.ingress = None
        else:
            self.mmu.release(frame)

    def on_port_idle(self, port: Port) -> None:
        if self.gse is not None:
            self.gse.resume_grants(port)

    def held_frames(self) -> Iterator[Frame]:
        """Frames this switch holds outside port queues and pending events (GSE queues), for the
        conservation balance at the end of a run."""
        if self.gse is not None:
            yield from self.gse.held_frames()

    def on_link_change(self, port: Port) -> None:
        # headroom follows the link: a restored path may be longer, a resized line faster
        self.headroom[port.index] = self._headroom_for(port)
        link = port.link
        if link is not None and not link.up:
            # pause state does not survive the link: the peer forgets our XOFF and we forget its
            self.mmu.forget_pauses(port.index)
            for prio in range(PRIORITIES):
                if port.paused >> prio & 1:
                    port.resume(prio)
        if self.gse is not None:
            self.gse.resume_grants(port)

    # -- results ----------------------------------------------------------------------------------
    def results(self) -> dict[str, Any]:
        out = super().results()
        out["settings"] = {
            "mode": self.mode, "role": self.role, "gse": self.gse is not None,
            "buffer_bytes": self.buffer_size, "latency_ps": self.latency_ps,
            "pfc": self.pfc, "lossless_priorities": sorted(self.lossless),
            "pfc_xoff_bytes": self.pfc_xoff, "pfc_xon_bytes": self.pfc_xon,
            "pfc_headroom_bytes": dict(zip(self.ports, self.headroom, strict=True)),
            "lossy_alpha": self.lossy_alpha,
            "ecn": self.ecn, "ecn_kmin_bytes": self.ecn_kmin, "ecn_kmax_bytes": self.ecn_kmax,
            "ecn_pmax": self.ecn_pmax,
            "gse_container_bytes": self.gse_container, "gse_credit_bytes": self.gse_credit,
        }
        return out
