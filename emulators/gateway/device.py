"""The intelligent computing gateway (智算网关): joins a site's fabric to the WAN (the OTN).

It is a switch (emulators.ethernet.switch) with settings for a long WAN round trip, plus what a
gateway adds in front of the WAN:

- a deep shared buffer (GBs) with PFC headroom from each port's link, so a pause from the far side
  is answered by buffering the WAN's bandwidth-delay product and pushing back hop by hop upstream;
- fast CNP: a WAN egress queue past ``fast_cnp_threshold`` sends CNPs straight to the local senders,
  instead of an ECN mark that would need a WAN round trip to come back as a CNP;
- flow identification (elephants once ``elephant_bytes`` have passed, mice before; PP at priority 4,
  DP at 3) and mice first: a mouse crosses the WAN at priority 5, carrying its own priority in
  ``fields["orig_prio"]``, and the far gateway gives it back on the way into its fabric;
- path information (端网协同): the WAN round trip, BER and protection switches, told to every NIC of
  the site at start and whenever the WAN changes, so NICs size their windows for the real path.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from emulators.ethernet.switch import Switch
from emulators.gateway.defaults import DP_PRIORITY, GATEWAY_DEFAULTS, MICE_PRIORITY, PP_PRIORITY
from emulators.kernel.engine import Engine
from emulators.kernel.frame import (
    CNP,
    CONTROL_FRAME_BYTES,
    CONTROL_PRIORITY,
    DATA,
    PATH_INFO,
    Frame,
    address,
    device_of,
)
from emulators.kernel.port import Port
from emulators.model.scenario import DeviceSpec, Endpoint, LinkSpec, propagation_ps

if TYPE_CHECKING:
    from emulators.context import ScenarioContext

GATEWAY_COUNTERS = (
    "wan_queue_bytes", "wan_queue_peak_bytes",  # bytes handed to the WAN ports and not yet sent
    "fast_cnps_sent",
    "mice_flows", "elephant_flows",  # flows seen: still below elephant_bytes / past it
    "mice_bytes", "elephant_bytes",  # data forwarded while its flow was a mouse / an elephant
    "pp_bytes", "dp_bytes", "other_class_bytes",  # data forwarded by the job's traffic class
    "mice_lifted_frames", "priority_restored_frames",
    "path_info_sent", "path_info_received",
)

TRAFFIC_CLASSES = {PP_PRIORITY: "PP", DP_PRIORITY: "DP"}


class Gateway(Switch):
    kind = "gateway"
    option_defaults = GATEWAY_DEFAULTS

    def __init__(self, name: str, device_id: int, engine: Engine, seed: int,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(name, device_id, engine, seed, options)
        setting = self.option_defaults | self.options
        self.wan_option: list[str] | None = setting["wan_ports"]
        self.fast_cnp = bool(setting["fast_cnp"])
        self.fast_cnp_threshold = int(setting["fast_cnp_threshold"])
        self.fast_cnp_interval_ps = int(setting["fast_cnp_interval"])
        self.elephant_threshold = int(setting["elephant_bytes"])
        self.mice_first = bool(setting["mice_first"])
        self.path_info = bool(setting["path_info"])
        self.counters.update(dict.fromkeys(GATEWAY_COUNTERS, 0))
        self.site: str | None = None
        self.is_wan: list[bool] = []  # by port index
        self.wan_paths: dict[int, list[LinkSpec]] = {}  # WAN port index -> links to the next gateway
        self.line_reports: dict[int, dict[str, int]] = {}  # WAN port index -> the OTN's last report
        self.local_nics: list[int] = []  # addresses PATH_INFO goes to
        self.flow_names: dict[int, str] = {}
        self.flow_bytes: dict[int, int] = {}
        self.flow_priority: dict[int, int] = {}
        self.last_fast_cnp: dict[int, int] = {}  # flow -> when its last fast CNP left
        self.charged_priority: dict[Frame, int] = {}  # frames re-prioritised here -> the priority the MMU charged
        self.last_path_info: dict[str, int] = {}
        self._last_announced: tuple[int, int, int] = (-1, -1, -1)
        self.wan_line_peer: dict[int, int] = {}  # WAN port index -> id of the OTN node across its line

    # -- set-up -----------------------------------------------------------------------------------
    def configure(self, context: ScenarioContext) -> None:
        super().configure(context)
        scenario = context.scenario
        self.site = scenario.device(self.name).site
        wan = self.wan_option if self.wan_option is not None else default_wan_ports(context, self.name)
        unknown = [p for p in wan if p not in self.ports]
        if unknown:
            raise ValueError(f"gateway {self.name}: wan_ports {unknown} are not its ports; "
                             f"its ports: {', '.join(self.ports)}")
        self.is_wan = [p in wan for p in self.ports]
        for pname in wan:
            index = self.port_index[pname]
            path = self.wan_paths[index] = wan_path(context, Endpoint(self.name, pname))
            if len(path) > 2:  # client link, line, ...: the line's far node is whom reports must be about
                near = context.peer_of[Endpoint(self.name, pname)].device
                line = path[1]
                self.wan_line_peer[index] = context.ids[line.z.device if line.a.device == near else line.a.device]
        self.local_nics = sorted(
            addr for addr in context.attachments if scenario.devices[device_of(addr)].site == self.site)
        self.flow_names = {index: spec.name for index, spec in enumerate(scenario.flows)}

    def start(self) -> None:
        if self.path_info:
            self.at(0, self._announce_path, 0)

    # -- ingress ----------------------------------------------------------------------------------
    def on_frame(self, port: Port, frame: Frame) -> None:
        if (frame.kind == PATH_INFO and frame.fields is not None and "length_mm" in frame.fields
                and self.is_wan[port.index]):
            self.counters["path_info_received"] += 1  # the OTN node's report of the line in use
            self.at(self.now + self.latency_ps, self._on_line_report, (port.index, frame))
            return
        super().on_frame(port, frame)

    def _forward(self, frame: Frame) -> None:
        egress = frame.ingress[2]
        if frame.kind == DATA and frame.flow >= 0:
            self._classify_and_schedule(frame, frame.ingress[0], egress.index)
        self.enqueue(egress, frame)

    def _classify_and_schedule(self, frame: Frame, in_index: int, out_index: int) -> None:
        fields = frame.fields
        carried = fields.get("orig_prio") if fields else None
        priority = frame.priority if carried is None else carried
        mouse = self._count(frame, priority)
        if self.is_wan[out_index]:
            if self.mice_first and mouse and carried is None and frame.priority < MICE_PRIORITY:
                frame.fields = (fields or {}) | {"orig_prio": frame.priority}
                self._reprioritise(frame, MICE_PRIORITY)
                self.counters["mice_lifted_frames"] += 1
        elif carried is not None and in_index >= 0 and self.is_wan[in_index]:
            assert fields is not None
            rest = {k: v for k, v in fields.items() if k != "orig_prio"}
            frame.fields = rest or None
            self._reprioritise(frame, carried)
            self.counters["priority_restored_frames"] += 1

    def _count(self, frame: Frame, priority: int) -> bool:
        """Account the frame to its flow and classes; True if its flow is still a mouse."""
        counters = self.counters
        flow = frame.flow
        before = self.flow_bytes.get(flow)
        if before is None:
            before = 0
            self.flow_priority[flow] = priority
            counters["mice_flows"] += 1
        after = before + frame.nbytes
        self.flow_bytes[flow] = after
        mouse = before < self.elephant_threshold
        counters["mice_bytes" if mouse else "elephant_bytes"] += frame.nbytes
        if mouse and after >= self.elephant_threshold:
            counters["mice_flows"] -= 1
            counters["elephant_flows"] += 1
        traffic_class = TRAFFIC_CLASSES.get(priority)
        counters["pp_bytes" if traffic_class == "PP" else "dp_bytes" if traffic_class == "DP"
                 else "other_class_bytes"] += frame.nbytes
        return mouse

    def _reprioritise(self, frame: Frame, priority: int) -> None:
        """Queue at another priority than the MMU charged the frame to (its ingress priority)."""
        self.charged_priority.setdefault(frame, frame.priority)
        frame.priority = priority

    def _release(self, frame: Frame) -> None:
        charged = self.charged_priority.pop(frame, None)
        if charged is None:
            super()._release(frame)
            return
        queued_at = frame.priority
        frame.priority = charged  # the MMU gives back what it took: from the ingress priority's account
        super()._release(frame)
        frame.priority = queued_at

    # -- egress -----------------------------------------------------------------------------------
    def enqueue(self, port: Port, frame: Frame) -> None:
        index = port.index
        if not self.is_wan[index]:
            super().enqueue(port, frame)
            return
        if (self.fast_cnp and frame.kind == DATA and frame.flow >= 0
                and self.mmu.egress[index][frame.priority].queued > self.fast_cnp_threshold):
            self._send_fast_cnp(frame)
        super().enqueue(port, frame)
        counters = self.counters
        counters["wan_queue_bytes"] += frame.nbytes
        if counters["wan_queue_bytes"] > counters["wan_queue_peak_bytes"]:
            counters["wan_queue_peak_bytes"] = counters["wan_queue_bytes"]

    def _send_fast_cnp(self, frame: Frame) -> None:
        now = self.now
        last = self.last_fast_cnp.get(frame.flow)
        if last is not None and now - last < self.fast_cnp_interval_ps:
            return
        self.last_fast_cnp[frame.flow] = now
        cnp = Frame(CNP, frame.flow, address(self.id), frame.src, CONTROL_FRAME_BYTES, CONTROL_FRAME_BYTES,
                    priority=CONTROL_PRIORITY, created_ps=now)
        cnp.entropy = frame.entropy
        self.counters["fast_cnps_sent"] += 1
        self.send_control(cnp)

    def on_frame_sent(self, port: Port, frame: Frame) -> None:
        self._left_port(port, frame)
        super().on_frame_sent(port, frame)

    def on_frame_dropped(self, port: Port, frame: Frame) -> None:
        self._left_port(port, frame)
        super().on_frame_dropped(port, frame)

    def _left_port(self, port: Port, frame: Frame) -> None:
        if self.is_wan[port.index]:
            self.counters["wan_queue_bytes"] -= frame.nbytes

    # -- path information -------------------------------------------------------------------------
    def on_link_change(self, port: Port) -> None:
        super().on_link_change(port)
        if self.path_info and self.is_wan[port.index]:
            self._announce_path(0)

    def _on_line_report(self, port_frame: tuple[int, Frame]) -> None:
        index, frame = port_frame
        assert frame.fields is not None
        if frame.fields.get("peer", -1) != self.wan_line_peer.get(index, -1):
            return  # about a line this WAN port's path does not take (another site's)
        self.line_reports[index] = dict(frame.fields)
        if self.path_info:
            self._announce_path(int(frame.fields.get("switch", 0)))

    def wan_one_way_ps(self, index: int) -> int:
        """Propagation from a WAN port to the next gateway: this port's link as it is now, the rest of
        the path as the scenario declares it, or the line length the OTN node last reported plus
        the client links at either end."""
        link = self.port_list[index].link
        own = link.propagation_ps if link is not None else 0
        path = self.wan_paths[index]
        report = self.line_reports.get(index)
        if report is None:
            return own + sum(hop.propagation_ps for hop in path[1:])
        far_client = path[-1].propagation_ps if len(path) > 1 else 0
        return own + propagation_ps(report["length_mm"]) + far_client

    def wan_ber_e18(self, index: int) -> int:
        """The worst bit error rate on the WAN path, x 1e18 (frame fields are integers)."""
        report = self.line_reports.get(index)
        link = self.port_list[index].link
        worst = max([link.ber if link is not None else 0.0] + [hop.ber for hop in self.wan_paths[index][1:]])
        ber_e18 = round(worst * 10**18)
        return max(ber_e18, report["ber_e18"]) if report is not None and "ber_e18" in report else ber_e18

    def _announce_path(self, switched: int) -> None:
        """Tell every NIC of the site the WAN round trip (the longest WAN path's: the window must
        cover it), the worst BER and whether a protection switch just happened."""
        wan = sorted(self.wan_paths)
        if not wan:
            return  # no WAN side: nothing to tell
        info = {
            "rtt_ps": max((2 * self.wan_one_way_ps(i) for i in wan), default=0),
            "device": -1,
            "via": self.id,
            "ber_e18": max((self.wan_ber_e18(i) for i in wan), default=0),
            "switch": int(bool(switched)),
        }
        if (self.now, info["rtt_ps"], info["ber_e18"]) == self._last_announced:
            return  # the same news again (a report per client port, or per switched ODU)
        self._last_announced = (self.now, info["rtt_ps"], info["ber_e18"])
        self.last_path_info = info
        source = address(self.id)
        for nic in self.local_nics:
            frame = Frame(PATH_INFO, -1, source, nic, CONTROL_FRAME_BYTES, CONTROL_FRAME_BYTES,
                          priority=CONTROL_PRIORITY, created_ps=self.now, fields=dict(info))
            self.counters["path_info_sent"] += 1
            self.send_control(frame)

    # -- results ----------------------------------------------------------------------------------
    def capacity_bps(self, wan: bool) -> int:
        return sum(p.rate_bps for p, is_wan in zip(self.port_list, self.is_wan, strict=True) if is_wan == wan)

    def results(self) -> dict[str, Any]:
        out = super().results()
        dc, wan = self.capacity_bps(False), self.capacity_bps(True)
        out["settings"] |= {
            "wan_ports": [p for p, is_wan in zip(self.ports, self.is_wan, strict=True) if is_wan],
            "dc_capacity_bps": dc, "wan_capacity_bps": wan,
            "convergence": dc / wan if wan else None,  # fabric-side : WAN-side capacity, e.g. 16.0
            "fast_cnp": self.fast_cnp, "fast_cnp_threshold_bytes": self.fast_cnp_threshold,
            "fast_cnp_interval_ps": self.fast_cnp_interval_ps,
            "elephant_threshold_bytes": self.elephant_threshold,
            "mice_first": self.mice_first, "mice_priority": MICE_PRIORITY,
            "path_info": self.path_info,
            "wan_paths": {self.port_list[i].name: [hop.name for hop in path]
                          for i, path in sorted(self.wan_paths.items())},
        }
        out["flows"] = {
            self.flow_names.get(flow, str(flow)): {
                "bytes": passed,
                "class": "mice" if passed < self.elephant_threshold else "elephant",
                "traffic_class": TRAFFIC_CLASSES.get(self.flow_priority[flow], "other"),
                "priority": self.flow_priority[flow],
            }
            for flow, passed in sorted(self.flow_bytes.items())
        }
        out["path_info"] = dict(self.last_path_info)
        return out


def tells_paths(spec: DeviceSpec) -> bool:
    """Whether a device tells the NICs of its site about the WAN path (a gateway with ``path_info``)."""
    return spec.kind == Gateway.kind and bool(spec.options.get("path_info", GATEWAY_DEFAULTS["path_info"]))


def default_wan_ports(context: ScenarioContext, gateway: str) -> list[str]:
    """Without ``wan_ports``: the ports whose far end is an OTN node, another gateway or in another site."""
    scenario = context.scenario
    site = scenario.device(gateway).site
    found = []
    for pname in scenario.device(gateway).ports:
        far = context.peer_of.get(Endpoint(gateway, pname))
        if far is None:
            continue
        spec = scenario.device(far.device)
        if spec.kind in ("otn", "gateway") or spec.site != site:
            found.append(pname)
    return found


def wan_path(context: ScenarioContext, start: Endpoint) -> list[LinkSpec]:
    """The links from a gateway's WAN port to the next gateway through forwarding devices (OTN
    nodes), over the working lines (an OTN node's protecting ports are skipped): the fewest hops,
    the first such path in link order; [] if no gateway is reachable."""
    scenario = context.scenario
    standby = {Endpoint(d.name, port) for d in scenario.devices if d.kind == "otn"
               for group in d.options.get("protection", []) for port in group.get("protecting", [])}
    first = context.link_at(start)
    if first is None:
        return []
    links_at: dict[str, list[tuple[LinkSpec, Endpoint]]] = {}
    for link in scenario.links:
        if link.a not in standby and link.z not in standby:
            links_at.setdefault(link.a.device, []).append((link, link.z))
            links_at.setdefault(link.z.device, []).append((link, link.a))
    far = context.peer_of[start].device
    todo = deque([(far, [first])])
    seen = {start.device, far}
    while todo:
        here, path = todo.popleft()
        if scenario.device(here).kind == "gateway":
            return path
        if here not in context.forwarders:
            continue
        for link, end in links_at.get(here, []):
            if end.device not in seen:
                seen.add(end.device)
                todo.append((end.device, [*path, link]))
    return []
