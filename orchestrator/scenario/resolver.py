"""Pass 5: the expanded document, its quantities converted, turned into the model's objects while checking
what the schema cannot: references between devices, links, flows and faults, and each device's options
against its kind. Checks across the whole scenario are in :mod:`orchestrator.scenario.checks`.

Problems are :class:`~orchestrator.errors.KeyProblem` at key paths of the expanded document; the loader
names them as written (:meth:`~orchestrator.scenario.builder.Expansion.where`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from jsonschema import Draft202012Validator

from emulators.kernel.frame import MAX_PORTS
from emulators.model.faults import LinkChange, change
from emulators.model.job import JobPlan
from emulators.model.scenario import RAW, RDMA, RDMA_PRIORITY, DeviceSpec, Endpoint, FlowSpec, LinkSpec, Scenario
from emulators.model.units import format_rate, format_time, parse_rate, parse_size, parse_time_ps, shown
from emulators.registry import DEVICE_KINDS, DeviceKind
from emulators.tester.defaults import SMALLEST_FRAME_BYTES
from orchestrator.errors import KeyPath, KeyProblem, key_path, listing
from orchestrator.scenario import checks
from orchestrator.scenario.builder import Expansion, value_at
from orchestrator.scenario.fault_kinds import LINK_CHANGE_FIELDS
from orchestrator.scenario.schema_errors import first_schema_problem
from orchestrator.scenario.traffic import RAW_FLOW_NEEDS_RATE
from orchestrator.scenario.units import convert, unit_problem
from orchestrator.workload.collective_test import build_collective_test
from orchestrator.workload.job import JobError, build_job
from orchestrator.workload.placement import scale_up_domains

DEFAULT_SEED = 1
DEFAULT_SAMPLE_INTERVAL_PS = parse_time_ps(checks.DEFAULT_SAMPLE_INTERVAL)
DEFAULT_FRAME_BYTES = parse_size("64KiB")
DEFAULT_BER = 0.0


class Resolver:
    """Turns a schema-valid, unit-converted, expanded document into model objects."""

    def __init__(self, source: str, expansion: Expansion, written: dict[str, Any]) -> None:
        self.source = source
        self.expansion = expansion
        self.document = expansion.document
        self.written = written  # as in the file, for messages that quote a value
        self.warnings: list[str] = []  # "<source>: <key path>: <what is meaningless>", in document order

    def where(self, path: KeyPath) -> str:
        """The key path as written, even for entries that a fabric or traffic pattern made."""
        return self.expansion.where(path)

    def fail(self, path: KeyPath, problem: str) -> NoReturn:
        raise KeyProblem(path, problem)

    def as_written(self, path: KeyPath) -> Any:
        """The value at a key path of the expanded document as the file writes it (checks quote only
        values that were written)."""
        written = self.expansion.written_path(path)
        assert written is not None, path
        return value_at(self.written, written)

    def scenario(self, seed: int | None) -> Scenario:
        doc = self.document
        if seed is None:
            seed = doc.get("seed", DEFAULT_SEED)
        elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            self.fail(
                ("seed",), f"the seed given to override the file's, {shown(seed)}, must be an integer >= 0"
            )
        duration_ps: int = doc["duration"]
        sample_interval_ps: int = doc.get("sample_interval", DEFAULT_SAMPLE_INTERVAL_PS)
        devices = self.devices(doc.get("devices", {}))
        checks.check_samples(devices, duration_ps, sample_interval_ps, self.written.get("sample_interval"))
        links = self.links(doc.get("links", []), {device.name: device for device in devices})
        for kind in DEVICE_KINDS.values():  # what each kind checks across devices and links
            if kind.check_scenario is not None and (problem := kind.check_scenario(devices, links)) is not None:
                raise KeyProblem(*problem)
        sites = doc["sites"] if "sites" in doc else sorted({d.site for d in devices if d.site is not None})
        scenario = Scenario(
            name=doc.get("name", _default_name(self.source)),
            source=self.source,
            seed=seed,
            duration_ps=duration_ps,
            sample_interval_ps=sample_interval_ps,
            sites=tuple(sites),
            devices=devices,
            links=links,
            flows=self.flows(doc.get("flows", []), devices, links),
            faults=self.faults(doc.get("faults", []), links, duration_ps),
        )
        for flow_path, flow in enumerate(scenario.flows):
            self.warn_after_end(("flows", flow_path, "start"), flow.start_ps, duration_ps, "so nothing is sent")
        for index, reason in sorted(self.expansion.idle_faults.items()):
            self.warnings.append(f"{self.source}: {key_path(('faults', index))}: expands to no link ({reason}), so "
                                 "it changes nothing")
        if "job" in doc and "collective_test" in doc:
            self.fail(("collective_test",), "a scenario runs a job or a collective test, not both; remove one")
        for key, build in (("job", self.job), ("collective_test", self.collective_test)):
            if key in doc:  # placed on the topology: which GPUs OLink joins into supernodes
                plan = build(doc[key], scenario)
                scenario = dataclasses.replace(scenario, job=plan)
                checks.check_reach(scenario, ("job", "placement") if key == "job" else (key, "gpus"))
                self.warn_after_end((key, "start"), plan.start_ps, duration_ps, "so no iteration runs")
        return dataclasses.replace(scenario, warnings=tuple(dict.fromkeys(self.warnings)))

    def warn_after_end(self, path: KeyPath, start_ps: int, duration_ps: int, outcome: str) -> None:
        if start_ps >= duration_ps:
            self.warnings.append(f"{self.source}: {self.where(path)}: {format_time(start_ps)} is at or after the "
                                 f"run's end ({format_time(duration_ps)}), {outcome}")

    def job(self, spec: dict[str, Any], topology: Scenario) -> JobPlan:
        """The training job's per-rank programs (orchestrator.workload) on the scenario's GPU servers and
        supernodes."""
        try:
            return build_job(spec, topology.devices, topology.sites, scale_up_domains(topology))
        except JobError as e:
            self.fail(("job", *e.path), e.problem)

    def collective_test(self, spec: dict[str, Any], topology: Scenario) -> JobPlan:
        """A collective test's plan (orchestrator.workload.collective_test) on the scenario's GPUs."""
        try:
            return build_collective_test(spec, topology.devices)
        except JobError as e:
            self.fail(("collective_test", *e.path), e.problem)

    def devices(self, specs: Mapping[str, Any]) -> tuple[DeviceSpec, ...]:
        sites = self.document.get("sites")
        devices = []
        for name, spec in specs.items():
            path: KeyPath = ("devices", name)
            kind = DEVICE_KINDS.get(spec["kind"])
            if kind is None:
                known = listing(sorted(DEVICE_KINDS))
                self.fail((*path, "kind"), f"unknown device kind {shown(spec['kind'])}; known kinds: {known}")
            site = spec.get("site")
            if site is not None and sites is not None and site not in sites:
                self.fail((*path, "site"), f"site {site!r} is not in sites; sites: {listing(sites)}")
            if len(spec["ports"]) > MAX_PORTS:  # fabrics and the WAN add ports to what they make
                self.fail((*path, "ports"), (
                    f"has {len(spec['ports'])} ports, more than the {MAX_PORTS} a device may have (a frame's address "
                    "holds the port index in 8 bits)"))
            if not spec["ports"] and not kind.portless:
                self.fail((*path, "ports"), f"has 0 entries; a {kind.name} needs at least 1 (only a GPU server "
                                            "that talks only inside itself goes without)")
            options = self.options(kind, spec.get("options", {}), (*path, "options"))
            self.check_options(kind, options, tuple(spec["ports"]), (*path, "options"))
            devices.append(DeviceSpec(name, kind.name, site, tuple(spec["ports"]), options))
        return tuple(sorted(devices, key=lambda device: device.name))

    def options(self, kind: DeviceKind, options: dict[str, Any], path: KeyPath) -> dict[str, Any]:
        found = first_schema_problem(Draft202012Validator(kind.options_schema), options)
        if found is not None:
            self.fail((*path, *found[0]), found[1])
        resolved: dict[str, Any] = convert(kind.options_schema, options, path)  # its kind knows the units
        return resolved

    def check_options(self, kind: DeviceKind, options: dict[str, Any], ports: tuple[str, ...], path: KeyPath) -> None:
        problem = kind.check(options, ports) if kind.check is not None else None
        if problem is not None:
            self.fail((*path, *problem[0]), problem[1])

    def claim_name(self, index_of_name: dict[str, int], name: str, path: KeyPath) -> None:
        """Record the name of the entry at ``path`` (("links", 3)), refusing one already taken."""
        table, index = path[0], path[1]
        assert isinstance(table, str) and isinstance(index, int)
        if name in index_of_name:
            self.fail(
                (*path, "name"),
                f"duplicate {table[:-1]} name {name!r} (also {self.where((table, index_of_name[name]))}); "
                "names must be unique",
            )
        index_of_name[name] = index

    def endpoint(self, text: str, devices: Mapping[str, DeviceSpec], path: KeyPath) -> Endpoint:
        device_name, port = text.split("/")
        device = devices.get(device_name)
        if device is None:
            self.fail(path, f"no device named {device_name!r}; devices: {listing(sorted(devices))}")
        if port not in device.ports:
            self.fail(
                path, f"device {device_name!r} has no port {port!r}; its ports: {listing(device.ports)}"
            )
        return Endpoint(device_name, port)

    def links(self, specs: list[dict[str, Any]], devices: Mapping[str, DeviceSpec]) -> tuple[LinkSpec, ...]:
        used_at: dict[Endpoint, KeyPath] = {}
        index_of_name: dict[str, int] = {}
        links = []
        for index, spec in enumerate(specs):
            path: KeyPath = ("links", index)
            a = self.endpoint(spec["a"], devices, (*path, "a"))
            z = self.endpoint(spec["z"], devices, (*path, "z"))
            for end, key in ((a, "a"), (z, "z")):
                if end in used_at:
                    self.fail(
                        (*path, key),
                        f"port {end} is already linked at {self.where(used_at[end])}; a port takes one link",
                    )
                used_at[end] = (*path, key)
            name = spec.get("name", f"{a}--{z}")
            self.claim_name(index_of_name, name, path)
            if spec["rate"] == 0:  # only a WAN line shared by more ODUs than it has bits per second
                self.fail((*path, "rate"), unit_problem(parse_rate, "0bps"))
            links.append(LinkSpec(name=name, a=a, z=z, rate_bps=spec["rate"], length_mm=spec["length"],
                                  ber=spec.get("ber", DEFAULT_BER)))
        return tuple(links)

    def flows(
        self, specs: list[dict[str, Any]], devices: tuple[DeviceSpec, ...], links: tuple[LinkSpec, ...]
    ) -> tuple[FlowSpec, ...]:
        by_name = {device.name: device for device in devices}
        linked = {end for link in links for end in (link.a, link.z)}
        index_of_name: dict[str, int] = {}
        flows = []
        for index, spec in enumerate(specs):
            path: KeyPath = ("flows", index)
            name = spec["name"]
            self.claim_name(index_of_name, name, path)
            src = self.endpoint(spec["src"], by_name, (*path, "src"))
            if spec.get("transport", RAW) == RDMA:
                flows.append(self.rdma_flow(spec, src, by_name, linked, path))
            else:
                flows.append(self.raw_flow(spec, src, by_name, linked, path))
        return tuple(flows)

    def raw_flow(
        self, spec: dict[str, Any], src: Endpoint, by_name: Mapping[str, DeviceSpec], linked: set[Endpoint],
        path: KeyPath,
    ) -> FlowSpec:
        if not DEVICE_KINDS[by_name[src.device].kind].sends_flows:
            self.fail(
                (*path, "src"),
                f"device {src.device!r} is a {by_name[src.device].kind}, not a tester; flows are sent by testers",
            )
        if src not in linked:
            self.fail((*path, "src"), f"port {src} is not connected by any link; a flow's source must be")
        if "rate" not in spec:
            self.fail((*path, "rate"), RAW_FLOW_NEEDS_RATE)
        rate_bps: int = spec["rate"]
        if rate_bps == 0:  # the unit pass lets it through for rdma flows, which take 0 as "as fast as can be"
            self.fail((*path, "rate"), unit_problem(parse_rate, self.as_written((*path, "rate"))))
        frame_bytes: int = spec.get("frame", DEFAULT_FRAME_BYTES)
        if frame_bytes < SMALLEST_FRAME_BYTES:  # smaller frames would only multiply the events a run takes
            self.fail((*path, "frame"), (
                f"{shown(self.as_written((*path, 'frame')))} is less than one packet: a frame is at least "
                f"{SMALLEST_FRAME_BYTES}B, the smallest Ethernet frame"))
        return FlowSpec(
            name=spec["name"],
            src=src,
            dst=self.endpoint(spec["dst"], by_name, (*path, "dst")),
            rate_bps=rate_bps,
            frame_bytes=frame_bytes,
            start_ps=spec.get("start", 0),
            count=self.frame_count(spec, rate_bps, frame_bytes),
            priority=spec.get("priority", 0),
        )

    def rdma_flow(
        self, spec: dict[str, Any], src: Endpoint, by_name: Mapping[str, DeviceSpec], linked: set[Endpoint],
        path: KeyPath,
    ) -> FlowSpec:
        """One message over a reliable connection between the NICs owning ``src`` and ``dst``."""
        for key in ("count", "frame"):
            if key in spec:
                self.fail(
                    (*path, key),
                    "rdma flows send one message: give bytes (or for with rate); the frame size is the NIC's "
                    "chunk option",
                )
        dst = self.endpoint(spec["dst"], by_name, (*path, "dst"))
        for end, key in ((src, "src"), (dst, "dst")):
            kind = DEVICE_KINDS[by_name[end.device].kind]
            if not kind.sends_flows:
                what = "runs a training job's programs" if _owns_nics(kind) else "has no RDMA NIC"
                self.fail(
                    (*path, key),
                    f"device {end.device!r} is a {kind.name}, which {what}; rdma flows run between testers' NICs",
                )
            if end not in linked:
                self.fail((*path, key), f"port {end} is not connected by any link; both ends of an rdma flow must be")
        if dst.device == src.device:
            self.fail(
                (*path, "dst"), f"is on the source's device {src.device!r}; an rdma flow runs between two devices"
            )
        rate_bps: int = spec.get("rate", 0)  # no rate (or 0): as fast as the transport allows
        return FlowSpec(
            name=spec["name"],
            src=src,
            dst=dst,
            rate_bps=rate_bps,
            frame_bytes=0,
            start_ps=spec.get("start", 0),
            count=0,
            priority=spec.get("priority", RDMA_PRIORITY),
            transport=RDMA,
            message_bytes=self.message_bytes(spec, rate_bps, path),
        )

    def message_bytes(self, spec: dict[str, Any], rate_bps: int, path: KeyPath) -> int:
        """An rdma flow's message size: its bytes, exactly, or what its rate sends in its for."""
        if "bytes" in spec:
            message: int = spec["bytes"]
            return message
        if rate_bps == 0:
            self.fail(
                (*path, "for"),
                "an rdma flow sized by time needs a rate (its message is rate x for / 8 bytes); "
                "give rate, or give bytes instead of for",
            )
        message_bytes: int = spec["for"] * rate_bps // (8 * 10**12)
        if message_bytes == 0:
            self.fail(
                (*path, "for"),
                f"{shown(self.as_written((*path, 'for')))} at {format_rate(rate_bps)} is less than one byte; send "
                "for longer",
            )
        return message_bytes

    def frame_count(self, spec: dict[str, Any], rate_bps: int, frame_bytes: int) -> int:
        """How many frames a flow sends, from whichever of count / bytes / for it gives."""
        if "count" in spec:
            count: int = spec["count"]
            return count
        if "bytes" in spec:
            total_bytes: int = spec["bytes"]
            return -(-total_bytes // frame_bytes)  # ceil, in integers: floats lose bytes past 2**53
        sending_ps: int = spec["for"]
        return max(1, sending_ps * rate_bps // (frame_bytes * 8 * 10**12))

    def faults(
        self, specs: list[dict[str, Any]], links: tuple[LinkSpec, ...], duration_ps: int
    ) -> tuple[LinkChange, ...]:
        link_names = [link.name for link in links]
        known = set(link_names)  # a fabric's plane faults name thousands of links
        faults = []
        for index, spec in enumerate(specs):
            path: KeyPath = ("faults", index)
            at_ps: int = spec["at"]
            if at_ps > duration_ps:
                self.fail(
                    (*path, "at"),
                    f"{format_time(at_ps)} is after the run ends at {format_time(duration_ps)}; "
                    "faults must happen within the duration",
                )
            if spec["link"] not in known:
                self.fail(
                    (*path, "link"), f"no link named {shown(spec['link'])}; links: {listing(link_names)}"
                )
            written = next(key for key in LINK_CHANGE_FIELDS if key in spec)
            faults.append(change(index, at_ps, spec["link"], LINK_CHANGE_FIELDS[written], spec[written]))
        return tuple(faults)


def _owns_nics(kind: DeviceKind) -> bool:
    """Kinds with RDMA NICs are those that take the NIC transport's settings (the rdma option)."""
    return "rdma" in kind.options_schema.get("properties", {})


def _default_name(source: str) -> str:
    """The file's stem as a DNS label (the name schema.json asks for): it names files and containers."""
    label = re.sub(r"[^a-z0-9-]+", "-", Path(source).stem.lower()).lstrip("-0123456789")[:63].rstrip("-")
    return "scenario" if source.startswith("<") or not label else label
