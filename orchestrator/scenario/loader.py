"""Scenario files (YAML, version 0) to a resolved :class:`~orchestrator.scenario.model.Scenario`.

Three passes, each failing with one line that names the file, the key path and what is allowed:
YAML (with duplicate keys refused), the JSON Schema in ``schema.json``, then the checks a schema
cannot express (references between devices, links, flows and faults) while converting units.
Between the last two, :mod:`orchestrator.scenario.fabric` expands fabrics, traffic patterns and
plane faults into the devices, links, flows and faults they stand for.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from jsonschema import Draft202012Validator
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from emulators.context import ScenarioContext
from emulators.kernel.frame import MAX_PORTS
from emulators.kernel.port import PORT_COUNTERS
from emulators.model.job import ALL_TO_ALL, JobPlan
from emulators.model.scenario import RAW, RDMA, RDMA_PRIORITY
from emulators.model.units import (
    RATE,
    format_bytes,
    format_rate,
    format_time,
    parse_ber,
    parse_length_mm,
    parse_rate,
    parse_size,
    parse_time_ps,
    shown,
)
from emulators.olink import spec as olink_spec
from emulators.rdma.host import nic_ports_of
from emulators.registry import DEVICE_KINDS, SMALLEST_FRAME_BYTES, DeviceKind
from orchestrator.scenario.fabric import RAW_FLOW_NEEDS_RATE, Expansion, ExpansionError, expand
from orchestrator.scenario.model import DeviceSpec, Endpoint, FaultSpec, FlowSpec, LinkSpec, Scenario
from orchestrator.scenario.schema_errors import KeyPath, first_schema_problem, key_path, listing
from orchestrator.workload.collective_test import build_collective_test
from orchestrator.workload.job import JobError, build_job
from orchestrator.workload.placement import scale_up_domains

Quantity = TypeVar("Quantity", int, float)

DEFAULT_SEED = 1
DEFAULT_SAMPLE_INTERVAL = "1ms"
DEFAULT_FRAME = "64KiB"

UNIT_PARSERS: dict[str, Callable[[Any], int | float]] = {
    "rate": parse_rate,
    "size": parse_size,
    "length": parse_length_mm,
    "time": parse_time_ps,
    "ber": parse_ber,
}

_YAML_STR = "tag:yaml.org,2002:str"
_YAML_MERGE = "tag:yaml.org,2002:merge"
_YAML_INT = "tag:yaml.org,2002:int"
_YAML_FLOAT = "tag:yaml.org,2002:float"

# Limits on what a scenario file may hold, checked while YAML composes it: before aliases expand
# into the values the later passes walk (a "billion laughs" file is a few hundred bytes).
# 1 MiB: ~450x the largest scenario here (2.3 KiB), and ~10 s for PyYAML; fabrics describe larger topologies
MAX_FILE_BYTES = 2**20
MAX_ALIASES = 1000  # scenarios here use one (*centre); a thousand allows any reuse a person writes
MAX_VALUES = 500_000  # values once aliases are written out: more than a 1 MiB file holds written out
MAX_DEPTH = 64  # levels of nesting: the deepest scenario key is 8 levels down
MAX_INT = 2**63  # whole numbers fit 64 bits, as the hosts, protobuf and JSON readers hold them
MAX_INT_DIGITS = 30  # longer numbers are refused before Python converts them (it refuses past 4,300 digits)
# A run keeps every sample of every port counter in its hosts and writes them to results.json (~100 bytes a
# value in a host): 20 million is ~2 GiB; the scenarios here sample at most 3.7 million.
MAX_SAMPLED_VALUES = 20_000_000

_FILE_TYPES: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


class ScenarioError(Exception):
    """A problem with a scenario file, as one line: ``<source>: <key.path>: <what is wrong and allowed>``."""

    def __init__(self, source: str, where: str | None, problem: str) -> None:
        self.source = source
        self.where = where
        self.problem = problem
        text = f"{source}: {where}: {problem}" if where else f"{source}: {problem}"
        super().__init__(" ".join(text.splitlines()))


def load_scenario(path: str | os.PathLike[str], seed: int | None = None) -> Scenario:
    """Read, validate and resolve a scenario file; ``seed`` (when given) overrides the file's seed."""
    source = str(path)
    try:
        text = _read_file(Path(path), source).decode("utf-8-sig")
    except FileNotFoundError:
        raise ScenarioError(source, None, "no such file") from None
    except UnicodeDecodeError as e:
        raise ScenarioError(source, None, f"is not UTF-8 text (bad byte at offset {e.start})") from None
    except OSError as e:
        raise ScenarioError(source, None, f"cannot be read: {e.strerror or e}") from None
    return parse_scenario(text, source, seed)


def _read_file(path: Path, source: str) -> bytes:
    """The file's bytes, refusing what is not a regular file (a device, a pipe: read forever or block)
    and files larger than :data:`MAX_FILE_BYTES`, before reading them."""
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        raise ScenarioError(source, None, "is a directory; give a scenario .yaml file")
    if not stat.S_ISREG(mode):
        what = next((word for test, word in _FILE_TYPES if test(mode)), "a special file")
        raise ScenarioError(source, None, f"is {what}, not a regular file; give a scenario .yaml file")
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)  # the size may have changed since stat
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError(source, None, (
            f"is larger than {format_bytes(MAX_FILE_BYTES)}, the most a scenario file may be; describe repeated "
            "parts with fabrics, supernodes or traffic patterns"))
    return data


def parse_scenario(text: str, source: str = "<string>", seed: int | None = None) -> Scenario:
    """Validate and resolve scenario YAML held in memory; ``source`` names it in error messages."""
    try:
        document = _read_yaml(text, source)
        _check_against_schema(document, source)
        return _Resolver(source, _expand(document, source)).scenario(seed)
    except ScenarioError:
        raise
    except Exception as e:  # a bug here must still reach the user as one line naming their file
        raise ScenarioError(
            source, None, f"internal error while loading ({type(e).__name__}: {e}); please report it"
        ) from e


@functools.cache
def scenario_schema() -> dict[str, Any]:
    """The JSON Schema of scenario files (draft 2020-12). Shared: read it, never change it."""
    schema: dict[str, Any] = json.loads(
        resources.files(__package__).joinpath("schema.json").read_text("utf-8")
    )
    return schema




# --- pass 1: YAML --------------------------------------------------------------------------------


class _KeyProblem(Exception):
    def __init__(self, path: KeyPath, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys (PyYAML keeps the last one silently, and a merge key ``<<``
    overrides without a word), non-text keys, numbers that are not finite or do not fit 64 bits, and
    files past the limits above (aliases, values once aliases expand, nesting), while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0
        self.depth = 0
        self.path: list[str | int] = []  # the key path of the node being composed
        self.values: dict[int, int] = {}  # id(node) -> values it stands for, aliases written out

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        self.check_tree(node, (), set())
        return self.construct_document(node)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        step = index if isinstance(index, int) else index.value if isinstance(index, ScalarNode) else None
        if step is not None:
            self.path.append(step)
        try:
            return self.compose_counted(parent, index)
        finally:
            if step is not None:
                self.path.pop()

    def compose_counted(self, parent: Node | None, index: Any) -> Node | None:
        line = self.peek_event().start_mark.line + 1
        if self.check_event(AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise self.limit(f"more than {MAX_ALIASES:,} aliases (line {line}); a scenario may use at most "
                                 f"{MAX_ALIASES:,}: describe repeated parts with fabrics, supernodes or traffic "
                                 "patterns")
            return super().compose_node(parent, index)  # counted where it is used (see values)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.limit(f"nested deeper than {MAX_DEPTH} levels (line {line}); no scenario key is more than "
                             "a few levels down")
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        children = [child for pair in node.value for child in pair] if isinstance(node, MappingNode) else (
            node.value if isinstance(node, SequenceNode) else [])
        # an alias to a node still being composed (a cycle) counts once: the schema refuses it where it is
        values = 1 + sum(self.values.get(id(child), 1) for child in children)
        if values > MAX_VALUES:
            raise self.limit(f"expands to more than {MAX_VALUES:,} values once its aliases are written out (line "
                             f"{line}); a scenario may hold at most that many: refer to fewer copies")
        self.values[id(node)] = values
        return node

    def limit(self, problem: str) -> _KeyProblem:
        return _KeyProblem(tuple(self.path[:4]), problem)  # deeper keys would make a long line

    def check_tree(self, node: Node, path: KeyPath, visited: set[int]) -> None:
        if id(node) in visited:  # an alias: already checked where its anchor is
            return
        visited.add(id(node))
        if isinstance(node, ScalarNode):
            self.check_number(node, path)
        if isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                self.check_tree(item, (*path, index), visited)
        if not isinstance(node, MappingNode):
            return
        merged: dict[str, tuple[int, int]] = {}  # key -> (line of the merge key, line of the key it brings)
        for key_node, value_node in node.value:
            if key_node.tag == _YAML_MERGE:
                self.check_tree(value_node, path, visited)
                merge_line = key_node.start_mark.line + 1
                for key, line in _merged_keys(value_node):
                    if key in merged:
                        lines = sorted({line, merged[key][1]})
                        raise _KeyProblem((*path, key), (
                            f"given twice through merge keys (<<), at line {' and '.join(map(str, lines))}; keys "
                            "must be unique, and a merge must not override a key"))
                    merged[key] = (merge_line, line)
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _YAML_MERGE:
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                raise _KeyProblem(path, f"the key at line {line} is not text; keys are names")
            key = key_node.value
            if key_node.tag != _YAML_STR:
                read_as = key_node.tag.rsplit(":", 1)[-1]
                raise _KeyProblem(
                    (*path, key), f"key at line {line} is read by YAML as {read_as}, not text; put it in quotes"
                )
            if key in first_line:
                raise _KeyProblem(
                    (*path, key),
                    f"duplicate key at line {line} (first at line {first_line[key]}); keys must be unique",
                )
            if key in merged:
                raise _KeyProblem((*path, key), (
                    f"duplicate key at line {line}: the merge key (<<) at line {merged[key][0]} gives it too; keys "
                    "must be unique, and a merge must not override a key"))
            first_line[key] = line
            self.check_tree(value_node, (*path, key), visited)

    def check_number(self, node: ScalarNode, path: KeyPath) -> None:
        """Whole numbers must fit 64 bits and other numbers be finite (YAML reads .inf, .nan and 1.0e999
        as numbers no quantity can be)."""
        if node.tag == _YAML_INT:
            digits = sum(c.isdigit() for c in node.value)
            number = None if digits > MAX_INT_DIGITS else self.construct_yaml_int(node)
            if number is None or not -MAX_INT <= number < MAX_INT:
                written = f"a whole number of {digits} digits" if number is None else str(number)
                raise _KeyProblem(path, f"{written} does not fit 64 bits; numbers may be at most {MAX_INT - 1}")
        elif node.tag == _YAML_FLOAT and not math.isfinite(self.construct_yaml_float(node)):
            raise _KeyProblem(path, (
                f"{node.value!r} is not a finite number (YAML reads .inf, .nan and numbers past 1e308 so); give a "
                "finite value"))


def _merged_keys(node: Node) -> list[tuple[str, int]]:
    """(key, line) of what a merge key's value brings: a mapping, or a list of mappings (in order)."""
    mappings = node.value if isinstance(node, SequenceNode) else [node]
    keys: list[tuple[str, int]] = []
    for mapping in mappings:
        if not isinstance(mapping, MappingNode):
            continue  # YAML itself refuses merging anything else
        for key_node, value_node in mapping.value:
            if key_node.tag == _YAML_MERGE:
                keys.extend(_merged_keys(value_node))
            elif isinstance(key_node, ScalarNode):
                keys.append((key_node.value, key_node.start_mark.line + 1))
    return keys


def _read_yaml(text: str, source: str) -> Any:
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # _StrictLoader is a SafeLoader
    except _KeyProblem as e:
        raise ScenarioError(source, key_path(e.path), e.problem) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = f"{e.problem} ({e.context})" if e.problem and e.context else e.problem or e.context
        raise ScenarioError(source, where, f"not valid YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise ScenarioError(source, None, f"not valid YAML: {e}") from None
    if document is None:
        raise ScenarioError(source, None, "the file is empty; a scenario needs at least a duration")
    return document


# --- pass 2: JSON Schema -------------------------------------------------------------------------


def _check_against_schema(document: Any, source: str) -> None:
    found = first_schema_problem(Draft202012Validator(scenario_schema()), document)
    if found is not None:
        path, problem = found
        raise ScenarioError(source, key_path(path), problem)



def _expand(document: dict[str, Any], source: str) -> Expansion:
    try:
        return expand(document)
    except ExpansionError as e:
        raise ScenarioError(source, key_path(e.path), e.problem) from None


# --- pass 3: references and units ----------------------------------------------------------------


def _talking_pairs(plan: JobPlan) -> set[tuple[int, int]]:
    """(rank, rank) pairs the programs make exchange messages: p2p peers, ring neighbours, and every
    pair of an all-to-all."""
    pairs: set[tuple[int, int]] = set()
    for rank, program in enumerate(plan.programs):
        for op in program:
            if op.peer >= 0:
                pairs.add((rank, op.peer))
            elif op.group >= 0:
                members = plan.groups[op.group]
                if op.collective == ALL_TO_ALL:
                    pairs.update((rank, m) for m in members if m != rank)
                else:
                    pairs.update(zip(members, members[1:] + members[:1], strict=True))
    return pairs


def _owns_nics(kind: DeviceKind) -> bool:
    """Kinds with RDMA NICs are those that take the NIC transport's settings (the rdma option)."""
    return "rdma" in kind.options_schema.get("properties", {})


FLOW_KIND = "tester"  # flows are the tester's; GPU servers run a job's programs

class _Resolver:
    """Turns a schema-valid, expanded document into model objects, checking what the schema cannot."""

    def __init__(self, source: str, expansion: Expansion) -> None:
        self.source = source
        self.expansion = expansion
        self.document = expansion.document
        self.warnings: list[str] = []  # "<source>: <key path>: <what is meaningless>", in document order

    def where(self, path: KeyPath) -> str:
        """The key path as written, even for entries that a fabric or traffic pattern made."""
        return self.expansion.where(path)

    def fail(self, path: KeyPath, problem: str) -> NoReturn:
        raise ScenarioError(self.source, self.where(path), problem)

    def quantity(self, parse: Callable[[Any], Quantity], value: Any, path: KeyPath) -> Quantity:
        try:
            return parse(value)
        except ValueError as e:
            self.fail(path, str(e))

    def above_zero(self, parse: Callable[[Any], Quantity], value: Any, path: KeyPath) -> Quantity:
        amount = self.quantity(parse, value, path)
        if amount == 0:
            self.fail(path, f"{shown(value)} is zero; it must be above zero")
        return amount

    def scenario(self, seed: int | None) -> Scenario:
        doc = self.document
        if seed is None:
            seed = doc.get("seed", DEFAULT_SEED)
        elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            self.fail(
                ("seed",), f"the seed given to override the file's, {shown(seed)}, must be an integer >= 0"
            )
        duration_ps = self.above_zero(parse_time_ps, doc["duration"], ("duration",))
        sample_interval = doc.get("sample_interval", DEFAULT_SAMPLE_INTERVAL)
        sample_interval_ps = self.above_zero(parse_time_ps, sample_interval, ("sample_interval",))
        devices = self.devices(doc.get("devices", {}))
        self.check_samples(devices, duration_ps, sample_interval_ps)
        self.check_olink_buffers(devices)
        links = self.links(doc.get("links", []), {device.name: device for device in devices})
        self.check_olink_links(devices, links)
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
                self.check_reach(scenario, ("job", "placement") if key == "job" else (key, "gpus"))
                self.warn_after_end((key, "start"), plan.start_ps, duration_ps, "so no iteration runs")
        return dataclasses.replace(scenario, warnings=tuple(dict.fromkeys(self.warnings)))

    def warn_after_end(self, path: KeyPath, start_ps: int, duration_ps: int, outcome: str) -> None:
        if start_ps >= duration_ps:
            self.warnings.append(f"{self.source}: {self.where(path)}: {format_time(start_ps)} is at or after the "
                                 f"run's end ({format_time(duration_ps)}), {outcome}")

    def check_samples(self, devices: tuple[DeviceSpec, ...], duration_ps: int, interval_ps: int) -> None:
        """Every sample holds every port counter of every device, kept by the hosts and written to
        results.json: refuse runs that would keep more than :data:`MAX_SAMPLED_VALUES` of them."""
        series = len(PORT_COUNTERS) * sum(len(device.ports) for device in devices)  # devices add a few more
        samples = duration_ps // interval_ps + 1  # one at 0, one every interval up to the end
        if series * samples <= MAX_SAMPLED_VALUES:
            return
        most = MAX_SAMPLED_VALUES // series  # samples that fit
        if most > 0:  # the interval i fits when duration // i < most
            least = _time_text(_round_up(duration_ps // most + 1))
            fix = f"use a sample_interval of at least {least}, or a shorter duration"
        else:
            fix = "use fewer ports"
        given = shown(self.document["sample_interval"]) if "sample_interval" in self.document else (
            f"the default {DEFAULT_SAMPLE_INTERVAL}")
        self.fail(("sample_interval",), (
            f"{given} over {format_time(duration_ps)} takes {samples:,} samples of at least {series:,} counters "
            f"({series * samples:,} values); a run keeps at most {MAX_SAMPLED_VALUES:,}: {fix}"))

    def check_olink_buffers(self, devices: tuple[DeviceSpec, ...]) -> None:
        """Credits and replay buffers written for OLink ports must hold the scenario's largest OLink
        frame, or nothing could ever be sent."""
        chunk = olink_spec.largest_chunk(devices)
        frame = olink_spec.wire_bytes(chunk)
        for device in devices:
            if device.kind not in (olink_spec.KIND, "gpu_server"):
                continue
            prefix: KeyPath = ("devices", device.name, "options")
            if device.kind != olink_spec.KIND:
                prefix = (*prefix, "olink")
            for key, value in (("credit", olink_spec.credit(device.kind, device.options, chunk)),
                               ("replay_buffer", olink_spec.replay_buffer(device.kind, device.options, chunk))):
                if value < frame:
                    self.fail((*prefix, key), (
                        f"{value} bytes cannot hold one OLink frame of the scenario's largest chunk ({chunk} bytes, "
                        f"{frame} on the wire); raise it or lower the GPU servers' olink.chunk"))

    def check_olink_links(self, devices: tuple[DeviceSpec, ...], links: tuple[LinkSpec, ...]) -> None:
        """OLink switch ports link to OLink switches or to GPU servers' scale-up ports, and those ports
        only to OLink switches: the two ends of a link must speak the same link layer."""
        kinds = {device.name: device.kind for device in devices}
        # every GPU of one supernode (OLink switches joined by links) has as many planes as the others
        group = {d.name: d.name for d in devices if d.kind == olink_spec.KIND}

        def root(name: str) -> str:
            while group[name] != name:
                name = group[name]
            return name

        attached: dict[Endpoint, str] = {}
        for link in links:
            if link.a.device in group and link.z.device in group:
                group[root(link.a.device)] = root(link.z.device)
            for near, far in ((link.a, link.z), (link.z, link.a)):
                if far.device in group:
                    attached[near] = far.device
        first: dict[str, tuple[str, int, int]] = {}  # supernode -> (server, GPU, scale-up ports) of its first GPU
        for device in devices:
            if device.kind != "gpu_server":
                continue
            for gpu, ports in olink_spec.scale_up_ports(device.ports).items():
                switch = attached.get(Endpoint(device.name, ports[0]))
                if switch is None:
                    continue
                server, other, planes = first.setdefault(root(switch), (device.name, gpu, len(ports)))
                if len(ports) != planes:
                    self.fail(("devices", device.name, "ports"), (
                        f"GPU {gpu} has {len(ports)} scale-up ports (OLink planes), but GPU {other} of {server} in "
                        f"the same supernode has {planes}; give every GPU of a supernode the same number of planes"))
        for index, link in enumerate(links):
            for near, far in ((link.a, link.z), (link.z, link.a)):
                scale_up = kinds[near.device] == "gpu_server" and olink_spec.is_scale_up_port(near.port)
                if kinds[far.device] == olink_spec.KIND and kinds[near.device] != olink_spec.KIND and not scale_up:
                    self.fail(("links", index), (
                        f"{near} is not an OLink port, but {far} is on an OLink switch; link a GPU server's "
                        f"scale-up port (olink<g> or olink<g>-<p>) or another OLink switch to it"))
                if scale_up and kinds[far.device] != olink_spec.KIND:
                    self.fail(("links", index), (
                        f"{near} is a scale-up port, but {far} is not on an OLink switch; link it to an olink "
                        f"device, or rename the port if it is a NIC"))

    def check_reach(self, scenario: Scenario, where: KeyPath = ("job", "placement")) -> None:
        """Every pair of GPUs on different servers that the job's programs make talk must be in one
        supernode (their scale-up ports on one connected set of OLink switches) or have NICs with a
        path between them, or the run would wait forever."""
        plan = scenario.job
        assert plan is not None
        context = ScenarioContext(scenario)
        devices = {d.name: d for d in scenario.devices}
        supernode_of = scale_up_domains(scenario)
        checked: set[tuple[str, str]] = set()
        for a, b in _talking_pairs(plan):
            here, there = plan.ranks[a], plan.ranks[b]
            joined = {supernode_of.get((place.device, place.gpu)) for place in (here, there)}
            if here.device == there.device or (len(joined) == 1 and None not in joined):
                continue
            ends = []  # OLink does not join them: they talk through their NICs
            for place, rank in ((here, a), (there, b)):
                ports = nic_ports_of(devices[place.device], place.gpu)
                ends.append(Endpoint(place.device, ports[0]) if ports else None)
                if ports == () or context.link_at(Endpoint(place.device, ports[0])) is None:
                    outside = " outside its supernode" if (place.device, place.gpu) in supernode_of else ""
                    self.fail(where, (
                        f"rank {rank} on {place.device} GPU {place.gpu} talks to another server{outside}, but that GPU "
                        f"has no linked NIC port; link one, join the servers in one supernode, or place the ranks "
                        f"that talk together"))
            pair = (here.device, there.device)
            if pair in checked:
                continue
            checked.add(pair)
            near, far = ends
            assert near is not None and far is not None
            if not context.path_links(near, far):
                self.fail(where, (
                    f"rank {a} on {here.device} talks to rank {b} on {there.device}, but neither one supernode nor "
                    f"a path between their NICs joins them; link the servers through switches, or place those "
                    f"ranks together"))

    def job(self, spec: dict[str, Any], topology: Scenario) -> JobPlan:
        """The training job's per-rank programs (orchestrator.workload) on the scenario's GPU servers and
        supernodes, its times converted first."""
        resolved = self.units(scenario_schema()["properties"]["job"], spec, ("job",))
        try:
            return build_job(resolved, topology.devices, topology.sites, scale_up_domains(topology))
        except JobError as e:
            self.fail(("job", *e.path), e.problem)

    def collective_test(self, spec: dict[str, Any], topology: Scenario) -> JobPlan:
        """A collective test's plan (orchestrator.workload.collective_test) on the scenario's GPUs."""
        resolved = self.units(scenario_schema()["properties"]["collective_test"], spec, ("collective_test",))
        try:
            return build_collective_test(resolved, topology.devices)
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
            if not spec["ports"] and kind.name != "gpu_server":
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
        resolved: dict[str, Any] = self.units(kind.options_schema, options, path)
        return resolved

    def check_options(self, kind: DeviceKind, options: dict[str, Any], ports: tuple[str, ...], path: KeyPath) -> None:
        problem = kind.check(options, ports) if kind.check is not None else None
        if problem is not None:
            self.fail((*path, *problem[0]), problem[1])

    def units(self, schema: Mapping[str, Any], value: Any, path: KeyPath) -> Any:
        """A copy of ``value`` with every quantity its schema marks with ``x-unit`` converted, at any depth."""
        if "$ref" in schema and "x-unit" not in schema:  # a shared definition (#/$defs/NAME)
            schema = scenario_schema()["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
        if "x-unit" in schema:
            parse = UNIT_PARSERS[schema["x-unit"]]
            nonzero = schema.get("x-nonzero")
            amount = self.above_zero(parse, value, path) if nonzero else self.quantity(parse, value, path)
            if "x-min" in schema and amount < parse(schema["x-min"]):
                self.fail(path, f"{shown(value)} is less than {schema['x-min']}, the least this option takes")
            return amount
        if isinstance(value, dict):
            properties = schema.get("properties", {})
            return {key: self.units(properties.get(key, {}), item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            items = schema.get("items")
            items = items if isinstance(items, dict) else {}
            return [self.units(items, item, (*path, index)) for index, item in enumerate(value)]
        return value

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
            links.append(
                LinkSpec(
                    name=name,
                    a=a,
                    z=z,
                    rate_bps=self.quantity(parse_rate, spec["rate"], (*path, "rate")),
                    length_mm=self.quantity(parse_length_mm, spec["length"], (*path, "length")),
                    ber=self.quantity(parse_ber, spec.get("ber", 0), (*path, "ber")),
                )
            )
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
        if by_name[src.device].kind != FLOW_KIND:
            self.fail(
                (*path, "src"),
                f"device {src.device!r} is a {by_name[src.device].kind}, not a tester; flows are sent by testers",
            )
        if src not in linked:
            self.fail((*path, "src"), f"port {src} is not connected by any link; a flow's source must be")
        if "rate" not in spec:
            self.fail((*path, "rate"), RAW_FLOW_NEEDS_RATE)
        rate_bps = self.quantity(parse_rate, spec["rate"], (*path, "rate"))
        frame_bytes = self.above_zero(parse_size, spec.get("frame", DEFAULT_FRAME), (*path, "frame"))
        if frame_bytes < SMALLEST_FRAME_BYTES:  # smaller frames would only multiply the events a run takes
            self.fail((*path, "frame"), (
                f"{shown(spec['frame'])} is less than one packet: a frame is at least {SMALLEST_FRAME_BYTES}B, the "
                "smallest Ethernet frame"))
        return FlowSpec(
            name=spec["name"],
            src=src,
            dst=self.endpoint(spec["dst"], by_name, (*path, "dst")),
            rate_bps=rate_bps,
            frame_bytes=frame_bytes,
            start_ps=self.quantity(parse_time_ps, spec.get("start", 0), (*path, "start")),
            count=self.frame_count(spec, rate_bps, frame_bytes, path),
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
            if kind.name != FLOW_KIND:
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
        # no rate (or 0): as fast as the transport allows
        rate_bps = self.quantity(RATE.parse, spec["rate"], (*path, "rate")) if "rate" in spec else 0
        return FlowSpec(
            name=spec["name"],
            src=src,
            dst=dst,
            rate_bps=rate_bps,
            frame_bytes=0,
            start_ps=self.quantity(parse_time_ps, spec.get("start", 0), (*path, "start")),
            count=0,
            priority=spec.get("priority", RDMA_PRIORITY),
            transport=RDMA,
            message_bytes=self.message_bytes(spec, rate_bps, path),
        )

    def message_bytes(self, spec: dict[str, Any], rate_bps: int, path: KeyPath) -> int:
        """An rdma flow's message size: its bytes, exactly, or what its rate sends in its for."""
        if "bytes" in spec:
            return self.above_zero(parse_size, spec["bytes"], (*path, "bytes"))
        sending_ps = self.above_zero(parse_time_ps, spec["for"], (*path, "for"))
        if rate_bps == 0:
            self.fail(
                (*path, "for"),
                "an rdma flow sized by time needs a rate (its message is rate x for / 8 bytes); "
                "give rate, or give bytes instead of for",
            )
        message_bytes = sending_ps * rate_bps // (8 * 10**12)
        if message_bytes == 0:
            self.fail(
                (*path, "for"),
                f"{shown(spec['for'])} at {format_rate(rate_bps)} is less than one byte; send for longer",
            )
        return message_bytes

    def frame_count(self, spec: dict[str, Any], rate_bps: int, frame_bytes: int, path: KeyPath) -> int:
        """How many frames a flow sends, from whichever of count / bytes / for it gives."""
        if "count" in spec:
            count: int = spec["count"]
            return count
        if "bytes" in spec:
            total_bytes = self.above_zero(parse_size, spec["bytes"], (*path, "bytes"))
            return -(-total_bytes // frame_bytes)  # ceil, in integers: floats lose bytes past 2**53
        sending_ps = self.above_zero(parse_time_ps, spec["for"], (*path, "for"))
        return max(1, sending_ps * rate_bps // (frame_bytes * 8 * 10**12))

    def faults(
        self, specs: list[dict[str, Any]], links: tuple[LinkSpec, ...], duration_ps: int
    ) -> tuple[FaultSpec, ...]:
        link_names = [link.name for link in links]
        known = set(link_names)  # a fabric's plane faults name thousands of links
        faults = []
        for index, spec in enumerate(specs):
            path: KeyPath = ("faults", index)
            at_ps = self.quantity(parse_time_ps, spec["at"], (*path, "at"))
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
            faults.append(
                FaultSpec(
                    index=index,
                    at_ps=at_ps,
                    link=spec["link"],
                    state=spec.get("state"),
                    rate_bps=self.quantity(parse_rate, spec["rate"], (*path, "rate"))
                    if "rate" in spec
                    else None,
                    ber=self.quantity(parse_ber, spec["ber"], (*path, "ber")) if "ber" in spec else None,
                    length_mm=(
                        self.quantity(parse_length_mm, spec["length"], (*path, "length"))
                        if "length" in spec
                        else None
                    ),
                )
            )
        return tuple(faults)


def _default_name(source: str) -> str:
    """The file's stem as a DNS label (the name schema.json asks for): it names files and containers."""
    label = re.sub(r"[^a-z0-9-]+", "-", Path(source).stem.lower()).lstrip("-0123456789")[:63].rstrip("-")
    return "scenario" if source.startswith("<") or not label else label


def _round_up(ps: int) -> int:
    """``ps`` rounded up to two significant digits: 246,411,999 -> 250,000,000."""
    scale = 10 ** max(0, len(str(ps)) - 2)
    return -(-ps // scale) * scale


def _time_text(ps: int) -> str:
    """A whole number of picoseconds as a scenario writes it, in the largest unit that keeps it whole: "200us"."""
    for scale, unit in ((10**12, "s"), (10**9, "ms"), (10**6, "us"), (10**3, "ns")):
        if ps % scale == 0:
            return f"{ps // scale}{unit}"
    return f"{ps}ps"
