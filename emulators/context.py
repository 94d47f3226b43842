"""What a device may know about the scenario around it: addresses, who forwards, and routes.

Every host builds the same context from the same scenario, so routes (and everything derived from
them) are identical in every partition. Routes are shortest paths over the switch graph as the
scenario declares it; switches learn of local link failures themselves (see emulators.ethernet).

It is also where a device reaches the job control bus (``post``), which its host supplies. What it
needs of each device kind (whether it forwards, its default latency) its builder passes in: the
runtime and the orchestrator hand it emulators.registry.DEVICE_KINDS.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, Protocol

from emulators.kernel.frame import DEVICE_ITSELF, address
from emulators.model.scenario import Endpoint, LinkSpec, Scenario

Post = Callable[[int, int, dict[str, Any]], None]


class KindTraits(Protocol):
    """What the context needs of a device kind (an emulators.kinds.DeviceKind)."""

    @property
    def forwards(self) -> bool: ...  # frames pass through it toward other devices

    @property
    def latency_ps(self) -> int: ...  # its default ``latency`` option


class ScenarioContext:
    def __init__(self, scenario: Scenario, kinds: Mapping[str, KindTraits], post: Post | None = None) -> None:
        self.scenario = scenario
        self._post = post
        self._kinds = kinds
        self.ids = {d.name: i for i, d in enumerate(scenario.devices)}
        self._port_index = {d.name: {p: i for i, p in enumerate(d.ports)} for d in scenario.devices}
        self.forwarders = frozenset(d.name for d in scenario.devices if kinds[d.kind].forwards)

    def post(self, at_ps: int, key: int, payload: dict[str, Any]) -> None:
        """Hand ``payload`` (JSON-serialisable) to every device with an ``on_bus(payload)`` hook, on
        every host, at ``at_ps``, in device-id order. ``key`` (an int >= 0, unique per message, e.g.
        ``device_id << 32 | counter``) orders messages due at the same time. In a multi-host run
        ``at_ps`` must be at least the partition's lookahead after now: the job's detect delay is."""
        if self._post is None:
            raise RuntimeError("no bus: this ScenarioContext was built without a host runtime to post through")
        self._post(at_ps, key, payload)

    def address(self, end: Endpoint | str, port: str | None = None) -> int:
        """The address of a device's port (a NIC), or of the device itself when ``port`` is None."""
        device = end.device if isinstance(end, Endpoint) else end
        if isinstance(end, Endpoint):
            port = end.port
        if port is None:
            return address(self.ids[device], DEVICE_ITSELF)
        return address(self.ids[device], self._port_index[device][port])

    @cached_property
    def largest_chunk(self) -> int:
        """The largest frame payload any NIC of the scenario emits (its ``rdma.chunk``; 0 if none is
        set): switches size PFC headroom for it and scale their default buffer and thresholds by it."""
        return max((int(d.options.get("rdma", {}).get("chunk", 0)) for d in self.scenario.devices), default=0)

    @cached_property
    def peer_of(self) -> dict[Endpoint, Endpoint]:
        """The far end of every linked port."""
        peers: dict[Endpoint, Endpoint] = {}
        for link in self.scenario.links:
            peers[link.a] = link.z
            peers[link.z] = link.a
        return peers

    @cached_property
    def _switch_distances(self) -> dict[str, dict[str, int]]:
        return self._distances_without(frozenset())

    def _distances_without(self, down: frozenset[str]) -> dict[str, dict[str, int]]:
        """Hop counts between forwarding devices, over links whose both ends forward and that are not
        ``down`` (BFS from each)."""
        neighbours: dict[str, set[str]] = {name: set() for name in self.forwarders}
        for link in self.scenario.links:
            if link.name in down:
                continue
            if link.a.device in self.forwarders and link.z.device in self.forwarders:
                neighbours[link.a.device].add(link.z.device)
                neighbours[link.z.device].add(link.a.device)
        distances: dict[str, dict[str, int]] = {}
        for source in sorted(self.forwarders):
            dist = {source: 0}
            todo = deque([source])
            while todo:
                here = todo.popleft()
                for there in neighbours[here]:
                    if there not in dist:
                        dist[there] = dist[here] + 1
                        todo.append(there)
            distances[source] = dist
        return distances

    @cached_property
    def attachments(self) -> dict[int, tuple[str, str]]:
        """Address of every port of a non-forwarding device that is linked to a forwarding one ->
        (that switch, its port)."""
        found: dict[int, tuple[str, str]] = {}
        for near, far in self.peer_of.items():
            if near.device not in self.forwarders and far.device in self.forwarders:
                found[self.address(near)] = (far.device, far.port)
        return found

    def routes(self, switch: str, down: frozenset[str] = frozenset()) -> dict[int, tuple[str, ...]]:
        """For one forwarding device: destination address -> its ports on a shortest path (the ECMP
        set, in port declaration order), avoiding the links named in ``down`` (what a routing
        protocol has converged on). Destinations are attached NIC ports and switches."""
        dist = self._distances_without(down) if down else self._switch_distances
        spec = self.scenario.device(switch)
        # my ports toward each neighbouring switch
        toward: list[tuple[str, str]] = []
        for port in spec.ports:
            end = Endpoint(switch, port)
            far = self.peer_of.get(end)
            link = self.link_at(end)
            if far is not None and far.device in self.forwarders and (link is None or link.name not in down):
                toward.append((port, far.device))

        def next_hops(target: str) -> tuple[str, ...]:
            mine = dist[switch].get(target)
            if mine is None or mine == 0:
                return ()
            return tuple(p for p, n in toward if dist[n].get(target) == mine - 1)

        table: dict[int, tuple[str, ...]] = {}
        for addr, (attached, port) in self.attachments.items():
            hops = (port,) if attached == switch else next_hops(attached)
            if hops:
                table[addr] = hops
        for other in self.forwarders:
            hops = next_hops(other)
            if hops:
                table[self.address(other)] = hops
        return table

    def path_links(self, src: Endpoint, dst: Endpoint) -> list[LinkSpec]:
        """The links of one shortest path from port ``src`` to port ``dst`` through forwarding
        devices (the first one found in link order), or [] if there is none."""
        links_at = self._links_at
        first = self.link_at(src)
        if first is None:
            return []
        start = self.peer_of[src]
        if start == dst:
            return [first]
        parent: dict[str, tuple[str, LinkSpec]] = {start.device: ("", first)}
        todo = deque([start.device])
        while todo:
            here = todo.popleft()
            for link, far in links_at.get(here, []):
                if far == dst:
                    path = [link]
                    while here != start.device:
                        here, hop = parent[here]
                        path.append(hop)
                    return [first, *reversed(path)]
                if far.device in self.forwarders and far.device not in parent:
                    parent[far.device] = (here, link)
                    todo.append(far.device)
        return []

    @cached_property
    def _links_at(self) -> dict[str, list[tuple[LinkSpec, Endpoint]]]:
        """Device -> (link, far end) for every link that touches it, in link order."""
        links_at: dict[str, list[tuple[LinkSpec, Endpoint]]] = {}
        for link in self.scenario.links:
            links_at.setdefault(link.a.device, []).append((link, link.z))
            links_at.setdefault(link.z.device, []).append((link, link.a))
        return links_at

    def link_at(self, end: Endpoint) -> LinkSpec | None:
        for link, far in self._links_at.get(end.device, []):
            if end in (link.a, link.z) and far != end:
                return link
        return None

    def path_delay(self, links: list[LinkSpec]) -> tuple[int, int]:
        """(store-and-forward hops, round trip without serialisation in ps) over a path of ``links``
        (from ``path_links``) and back on idle links: propagation both ways and each switch's
        forwarding latency both ways. Serialisation is left to the caller, since it depends on the
        frame and the rate. (0, 0) for no path."""
        total = 0
        for index, link in enumerate(links):
            total += 2 * link.propagation_ps
            if index:  # the switch joining this link to the previous one, crossed both ways
                joint = {link.a.device, link.z.device} & {links[index - 1].a.device, links[index - 1].z.device}
                for name in joint:
                    if name in self.forwarders:
                        spec = self.scenario.device(name)
                        total += 2 * int(spec.options.get("latency", self._kinds[spec.kind].latency_ps))
        return len(links), total
