"""A host's share of a scenario, without any I/O: its engine, its devices, the links that touch
them, the faults on those links, and the frames it owes to other hosts.

The same class runs in every deployment. The coordinator (in-process or over gRPC) drives it one
window at a time: ``deliver`` frames from peers, ``advance`` to the window end, hand the outgoing
frames to the peers they are for.

It also carries the job control bus: a device posts a message for a time ``at_ps`` (through
``ScenarioContext.post``) and every device with an ``on_bus(payload)`` hook, on every host, gets the
payload at ``at_ps``, in device-id order. Each host schedules one event per message under
``(at_ps, BUS_ORIGIN, key)``: ties are broken by the poster's key, never by when or where the message
was posted, so every partition delivers alike. Messages reach other hosts through the coordinator,
so a poster must look at least the partition's lookahead ahead (the job's detect delay bounds it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from emulators.context import ScenarioContext
from emulators.kernel.device import Device
from emulators.kernel.engine import Engine
from emulators.kernel.frame import DATA, Frame
from emulators.kernel.link import Channel, Link, Outgoing
from emulators.kernel.port import Port
from emulators.kernel.vtime import NEVER
from emulators.model.faults import LinkChange, change_from_dict
from emulators.model.scenario import Scenario
from emulators.olink.fec import link_fec
from emulators.registry import DEVICE_KINDS

BUS_ORIGIN = -1  # the origin of bus deliveries in the event key: below every device id

BusMessage = tuple[int, int, dict[str, Any]]  # (at_ps, key, payload)

# what a fault's link carried and lost while the fault was in force (summed over the link's ends);
# gap_frames: what the nodes at its ends dropped while they switched protection (an OTN node's counter)
LINK_TALLIES = ("tx_bytes", "lost_frames", "down_drop_frames", "rx_corrupt_packets", "gap_frames")
PORT_TALLIES = LINK_TALLIES[:4]


class CausalityError(RuntimeError):
    """A frame or bus message arrived for a time this host has already simulated: the partition's
    lookahead is wrong, or a bus message was posted too close to its delivery time."""


INPUT_KEYS = 1 << 62  # bus keys from here up carry inputs from outside the run (injected faults)


def fault_input(fault: LinkChange) -> BusMessage:
    """An injected fault as the bus message that takes it to every host."""
    return (fault.at_ps, INPUT_KEYS + fault.index, {"fault": fault.to_dict()})


class HostRuntime:
    def __init__(self, scenario: Scenario, host: str, assignment: dict[str, str]) -> None:
        self.scenario = scenario
        self.host = host
        self.engine = Engine()
        self.ids = {d.name: i for i, d in enumerate(scenario.devices)}
        self.devices: dict[str, Device] = {}
        self.by_id: dict[int, Device] = {}
        self.links: dict[str, Link] = {}
        self.link_ports: dict[str, list[Port]] = {}  # each link's ends on this host
        self.outboxes: dict[str, list[Outgoing]] = {}  # peer host -> frames owed to it this window
        self.inbox: list[Outgoing] = []
        self.sent_total: dict[str, int] = {}
        self.received_from: dict[str, int] = {}  # peer host -> frames delivered from it (cumulative)
        self.window_end = 0
        self.bus_out: list[BusMessage] = []  # posted here since the last ``take_bus``
        self._bus_inbox: list[tuple[int, int, str]] = []  # (at_ps, key, payload JSON) from other hosts
        self._bus_keys: set[int] = set()  # keys scheduled here: a repeated key would make ties ambiguous
        self.bus_deliveries = 0
        self.fault_marks: list[dict[str, Any]] = []  # each fault's link tallies when it applied here
        for spec in scenario.devices:
            if assignment[spec.name] != host:
                continue
            cls = DEVICE_KINDS[spec.kind].load_class()
            device: Device = cls(spec.name, self.ids[spec.name], self.engine, scenario.seed, spec.options)
            for pname in spec.ports:
                device.add_port(pname)
            self.devices[spec.name] = device
            self.by_id[device.id] = device
        self._wire_links(assignment)
        self.sample_times: list[int] = []
        if scenario.sample_interval_ps > 0:
            self.engine.sample_every(scenario.sample_interval_ps, self._take_samples)
        self.context = ScenarioContext(scenario, DEVICE_KINDS, self.post)
        self._listeners: list[Callable[[dict[str, Any]], None]] = [
            hook for i in sorted(self.by_id) if (hook := getattr(self.by_id[i], "on_bus", None)) is not None]
        for device_id in sorted(self.by_id):
            self.by_id[device_id].configure(self.context)
        self._add_faults()

    # -- building ---------------------------------------------------------------------------------
    def _wire_links(self, assignment: dict[str, str]) -> None:
        seed = self.scenario.seed
        for spec in self.scenario.links:
            ends = [(spec.a, spec.z, "a>z"), (spec.z, spec.a, "z>a")]
            local = [e for e in ends if e[0].device in self.devices]
            if not local:
                continue
            link = Link(spec.name, spec.rate_bps, spec.length_mm, spec.ber, spec.delay_ps_per_m)
            link.fec = link_fec(self.scenario, spec)
            self.links[spec.name] = link
            link_ports = self.link_ports[spec.name] = []
            for near, far, direction in local:
                port = self.devices[near.device].ports[near.port]
                port.link = link
                link.ports.append(port)
                link_ports.append(port)
                channel = Channel(link, port, seed, direction)
                port.channel = channel
                if far.device in self.devices:
                    channel.local_dst = self.devices[far.device].ports[far.port]
                else:
                    peer = assignment[far.device]
                    channel.remote_device_id = self.ids[far.device]
                    channel.remote_port = far.port
                    channel.outbox = self.outboxes.setdefault(peer, [])
                    self.sent_total.setdefault(peer, 0)

    def _add_faults(self) -> None:
        for fault in self.scenario.faults:
            link = self.links.get(fault.link)
            if link is not None:
                self.engine.add_change(fault.at_ps, fault.index, self._marked(link, fault))

    def _marked(self, link: Link, fault: LinkChange) -> Callable[[], None]:
        """The fault's action, after noting what its link's ends here had carried and lost so far:
        results take the differences to the next change of the link as what the fault hit."""
        def apply() -> None:
            self.fault_marks.append({"index": fault.index, "link": fault.link, "at_ps": fault.at_ps,
                                     "tallies": link_tallies(self.link_ports[fault.link])})
            fault.apply(link)

        return apply

    def add_fault(self, fault: LinkChange) -> None:
        """A fault injected while the run goes (through the orchestrator's control service): it joins
        the timeline exactly as if the scenario had listed it, and devices that plan around the
        timeline (switches' route convergence) hear of it. Every host gets it with the same window."""
        link = self.links.get(fault.link)
        if link is not None:
            self.engine.add_change(fault.at_ps, fault.index, self._marked(link, fault))
        for device_id in sorted(self.by_id):
            hook = getattr(self.by_id[device_id], "on_fault_added", None)
            if hook is not None:
                hook(fault)

    @property
    def local_links(self) -> set[str]:
        """Links whose both ends this host runs (a change on one end is seen by the other)."""
        return {name for name, ports in self.link_ports.items() if len(ports) == 2}

    @property
    def peers(self) -> list[str]:
        return sorted(self.outboxes)

    # -- running ----------------------------------------------------------------------------------
    def start(self) -> None:
        for device_id in sorted(self.by_id):
            self.by_id[device_id].start()

    def deliver(self, peer: str, frames: list[Outgoing]) -> None:
        """Frames from a peer host; they join the heap at the start of the next ``advance``."""
        self.inbox.extend(frames)
        self.received_from[peer] = self.received_from.get(peer, 0) + len(frames)

    def holds_all(self, expect_from: dict[str, int]) -> bool:
        """Whether every frame each peer has sent here so far (per the coordinator) has arrived. Counted
        per peer: a fast peer's frames of a later window must not stand in for a slow peer's."""
        return all(self.received_from.get(peer, 0) >= n for peer, n in expect_from.items())

    def _merge_inbox(self) -> None:
        schedule = self.engine.schedule
        for arrival, origin, seq, device_id, port_name, frame in self.inbox:
            if arrival < self.window_end:
                raise CausalityError(
                    f"host {self.host}: frame from device {origin} arrives at {arrival} ps, "
                    f"before this host's window end {self.window_end} ps")
            schedule(arrival, origin, seq, self.by_id[device_id].ports[port_name].receive, frame)
        self.inbox.clear()
        for at_ps, key, text in self._bus_inbox:
            if at_ps < self.window_end:
                raise CausalityError(
                    f"host {self.host}: bus message {key} is due at {at_ps} ps, before this host's window "
                    f"end {self.window_end} ps: post at least the partition's lookahead ahead (the job's "
                    f"detect delay)")
            if key >= INPUT_KEYS:  # an input from outside the run, not a device's message
                self._take_input(at_ps, json.loads(text))
                continue
            self._schedule_bus(at_ps, key, text)
        self._bus_inbox.clear()

    def _take_input(self, at_ps: int, payload: dict[str, Any]) -> None:
        if "fault" in payload:  # injected through the orchestrator's control service
            self.add_fault(change_from_dict(payload["fault"]))
        elif "link_rate" in payload:  # a management Set on another host, of a link this one may share
            change = payload["link_rate"]
            self.add_link_rate(at_ps, change["index"], change["link"], change["rate_bps"])
        else:
            raise ValueError(f"host {self.host}: an input message at {at_ps} ps says nothing known: {payload}")

    def add_link_rate(self, at_ps: int, index: int, name: str, rate_bps: int) -> None:
        """Link ``name`` runs at ``rate_bps`` from ``at_ps`` on, on this host's side of it (if any);
        ``index`` orders it among the timeline's changes at that time."""
        link = self.links.get(name)
        if link is not None:
            self.engine.add_change(at_ps, index, lambda: link.set_rate(rate_bps))

    def post_input(self, at_ps: int, key: int, payload: dict[str, Any]) -> None:
        """Hand an input (``key`` >= INPUT_KEYS) to every other host, due at ``at_ps``: at or after this
        window's end, which the other hosts have not passed. This host has already scheduled it."""
        if key < INPUT_KEYS or at_ps < self.window_end:
            raise ValueError(f"host {self.host}: input {key} at {at_ps} ps: inputs take keys from {INPUT_KEYS} "
                             f"and are due no earlier than the window's end ({self.window_end} ps)")
        self.bus_out.append((at_ps, key, payload))

    # -- the job control bus ----------------------------------------------------------------------
    def post(self, at_ps: int, key: int, payload: dict[str, Any]) -> None:
        """Deliver ``payload`` to every ``on_bus`` hook of the scenario at ``at_ps`` (what
        ``ScenarioContext.post`` does). Scheduled here at once; ``take_bus`` hands it to the others."""
        if at_ps < self.engine.now:
            raise ValueError(f"bus message {key} posted at {self.engine.now} ps for the past ({at_ps} ps)")
        try:
            text = bus_json(payload)
        except (TypeError, ValueError) as e:
            raise ValueError(f"bus message {key}: the payload is not JSON-serialisable: {e}") from None
        self._schedule_bus(at_ps, key, text)
        self.bus_out.append((at_ps, key, json.loads(text)))

    def deliver_bus(self, messages: list[BusMessage]) -> None:
        """Bus messages posted on other hosts; they join the heap at the start of the next ``advance``."""
        self._bus_inbox.extend((at, key, bus_json(payload)) for at, key, payload in messages)

    def take_bus(self) -> list[BusMessage]:
        """The messages posted here since the last call, for the other hosts."""
        out, self.bus_out = self.bus_out, []
        return out

    def _schedule_bus(self, at_ps: int, key: int, text: str) -> None:
        if key < 0:
            raise ValueError(f"bus message key {key} is negative; keys are ints >= 0")
        if key in self._bus_keys:
            raise ValueError(f"host {self.host}: bus message key {key} is already taken; keys are unique per message")
        self._bus_keys.add(key)
        self.engine.schedule(at_ps, BUS_ORIGIN, key, self._on_bus, text)

    def _on_bus(self, text: str) -> None:
        """One bus message here: each device decodes its own copy, so none sees another's changes."""
        self.bus_deliveries += 1
        for listener in self._listeners:
            listener(json.loads(text))

    @property
    def events(self) -> int:
        """Events processed here, bus deliveries left out: every host has one per message, so
        counting them would make the total depend on the partition."""
        return self.engine.events - self.bus_deliveries

    def _take_samples(self, at_ps: int) -> None:
        self.sample_times.append(at_ps)
        for device in self.devices.values():
            device.take_sample()

    def advance(self, end_ps: int) -> dict[str, list[Outgoing]]:
        """Run every event before ``end_ps``; return the frames owed to each peer host."""
        self._merge_inbox()
        self.engine.run_until(end_ps)
        self.window_end = max(self.window_end, end_ps)
        out: dict[str, list[Outgoing]] = {}
        for peer, box in self.outboxes.items():
            if box:
                out[peer] = list(box)
                self.sent_total[peer] += len(box)
                box.clear()
        return out

    def next_time(self) -> int:
        self._merge_inbox()
        return self.engine.next_time()

    # -- results ----------------------------------------------------------------------------------
    def in_flight(self) -> dict[str, dict[str, int]]:
        """Data still queued or on the wire (per flow name): what the conservation balance needs."""
        totals: dict[int, list[int]] = {}

        flows = self.scenario.flows

        def add(frame: Frame) -> None:  # scenario flows only: a job's messages are the GPU servers' to count
            if frame.kind == DATA and 0 <= frame.flow < len(flows):
                t = totals.setdefault(frame.flow, [0, 0])
                t[0] += 1
                t[1] += frame.nbytes

        for device in self.devices.values():
            for frame in device.held_frames():
                add(frame)
            for port in device.ports.values():
                for queue in port.queues:
                    for frame in queue:
                        add(frame)
        for event in self.engine.pending():
            if isinstance(event[4], Frame):
                add(event[4])
        for *_, frame in self.inbox:
            add(frame)
        return {flows[i].name: {"frames": v[0], "bytes": v[1]} for i, v in sorted(totals.items())}

    def results(self) -> dict[str, Any]:
        times = self.sample_times
        series = {}
        for name, device in self.devices.items():
            names = device.counter_names()
            # before its first sample (a run stopped that early) a device has an empty column per counter
            columns = list(zip(*device.series, strict=True)) if device.series else [()] * len(names)
            series[name] = {"t_ps": list(times)} | {
                counter: list(col) for counter, col in zip(names, columns, strict=True)
            }
        return {
            "host": self.host,
            "events": self.events,
            "devices": {name: self.devices[name].results() for name in sorted(self.devices)},
            "timeseries": series,
            "in_flight": self.in_flight(),
            "fault_marks": self.fault_marks,
            "link_tallies": {name: link_tallies(self.link_ports[name]) for name in sorted(
                {mark["link"] for mark in self.fault_marks})},
        }


def link_tallies(ports: list[Port]) -> dict[str, int]:
    """What a link's ends ``ports`` on this host have sent, lost and taken corrupted so far."""
    tallies = {name: sum(getattr(port, name) for port in ports) for name in PORT_TALLIES}
    tallies["gap_frames"] = sum(port.device.counters.get("protection_gap_frames", 0) for port in ports)
    return tallies


def bus_json(payload: dict[str, Any]) -> str:
    """A bus payload as every host sees it: each host decodes this same text."""
    return json.dumps(payload, separators=(",", ":"))


def earliest_arrival(sent: dict[str, list[Outgoing]]) -> int:
    """The first arrival among frames a window sent to other hosts (NEVER if none): the clock needs
    it because those frames may reach their hosts only after the hosts have reported."""
    return min((frame[0] for frames in sent.values() for frame in frames), default=NEVER)
