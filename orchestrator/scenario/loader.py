"""Scenario files (YAML, version 0) to a resolved :class:`~orchestrator.scenario.model.Scenario`.

Three passes, each failing with one line that names the file, the key path and what is allowed:
YAML (with duplicate keys refused), the JSON Schema in ``schema.json``, then the checks a schema
cannot express (references between devices, links, flows and faults) while converting units.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from jsonschema import Draft202012Validator
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from emulators.registry import DEVICE_KINDS, DeviceKind
from orchestrator.scenario.model import DeviceSpec, Endpoint, FaultSpec, FlowSpec, LinkSpec, Scenario
from orchestrator.scenario.schema_errors import KeyPath, first_schema_problem, key_path
from orchestrator.scenario.units import (
    format_time,
    parse_ber,
    parse_length_mm,
    parse_rate,
    parse_size,
    parse_time_ps,
    shown,
)

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
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ScenarioError(source, None, "no such file") from None
    except IsADirectoryError:
        raise ScenarioError(source, None, "is a directory; give a scenario .yaml file") from None
    except UnicodeDecodeError as e:
        raise ScenarioError(source, None, f"is not UTF-8 text (bad byte at offset {e.start})") from None
    except OSError as e:
        raise ScenarioError(source, None, f"cannot be read: {e.strerror or e}") from None
    return parse_scenario(text, source, seed)


def parse_scenario(text: str, source: str = "<string>", seed: int | None = None) -> Scenario:
    """Validate and resolve scenario YAML held in memory; ``source`` names it in error messages."""
    try:
        document = _read_yaml(text, source)
        _check_against_schema(document, source)
        return _Resolver(source, document).scenario(seed)
    except ScenarioError:
        raise
    except Exception as e:  # a bug here must still reach the user as one line naming their file
        raise ScenarioError(
            source, None, f"internal error while loading ({type(e).__name__}: {e}); please report it"
        ) from e


@functools.cache
def scenario_schema() -> dict[str, Any]:
    """The JSON Schema of scenario files (draft 2020-12)."""
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
    """Safe YAML that refuses duplicate keys (PyYAML keeps the last one silently) and non-text keys."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_keys(node, (), set())
        return self.construct_document(node)


def _check_keys(node: Node, path: KeyPath, visited: set[int]) -> None:
    if id(node) in visited:  # an alias: already checked where its anchor is
        return
    visited.add(id(node))
    if isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            _check_keys(item, (*path, index), visited)
    if not isinstance(node, MappingNode):
        return
    first_line: dict[str, int] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == _YAML_MERGE:
            _check_keys(value_node, path, visited)
            continue
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
        first_line[key] = line
        _check_keys(value_node, (*path, key), visited)


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




# --- pass 3: references and units ----------------------------------------------------------------


def _listing(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    if not names:
        return "none are declared"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class _Resolver:
    """Turns a schema-valid document into model objects, checking what the schema cannot."""

    def __init__(self, source: str, document: dict[str, Any]) -> None:
        self.source = source
        self.document = document

    def fail(self, path: KeyPath, problem: str) -> NoReturn:
        raise ScenarioError(self.source, key_path(path), problem)

    def quantity(self, parse: Callable[[Any], Quantity], value: Any, path: KeyPath) -> Quantity:
        try:
            return parse(value)
        except ValueError as e:
            self.fail(path, str(e))

    def above_zero(self, parse: Callable[[Any], int], value: Any, path: KeyPath) -> int:
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
        devices = self.devices(doc.get("devices", {}))
        links = self.links(doc.get("links", []), {device.name: device for device in devices})
        sites = doc["sites"] if "sites" in doc else sorted({d.site for d in devices if d.site is not None})
        return Scenario(
            name=doc.get("name", _default_name(self.source)),
            source=self.source,
            seed=seed,
            duration_ps=duration_ps,
            sample_interval_ps=self.above_zero(parse_time_ps, sample_interval, ("sample_interval",)),
            sites=tuple(sites),
            devices=devices,
            links=links,
            flows=self.flows(doc.get("flows", []), devices, links),
            faults=self.faults(doc.get("faults", []), links, duration_ps),
        )

    def devices(self, specs: Mapping[str, Any]) -> tuple[DeviceSpec, ...]:
        sites = self.document.get("sites")
        devices = []
        for name, spec in specs.items():
            path: KeyPath = ("devices", name)
            kind = DEVICE_KINDS.get(spec["kind"])
            if kind is None:
                known = _listing(sorted(DEVICE_KINDS))
                self.fail((*path, "kind"), f"unknown device kind {shown(spec['kind'])}; known kinds: {known}")
            site = spec.get("site")
            if site is not None and sites is not None and site not in sites:
                self.fail((*path, "site"), f"site {site!r} is not in sites; sites: {_listing(sites)}")
            options = self.options(kind, spec.get("options", {}), (*path, "options"))
            devices.append(DeviceSpec(name, kind.name, site, tuple(spec["ports"]), options))
        return tuple(sorted(devices, key=lambda device: device.name))

    def options(self, kind: DeviceKind, options: dict[str, Any], path: KeyPath) -> dict[str, Any]:
        found = first_schema_problem(Draft202012Validator(kind.options_schema), options)
        if found is not None:
            self.fail((*path, *found[0]), found[1])
        resolved = dict(options)
        for key, option in kind.options_schema.get("properties", {}).items():
            if key in options and "x-unit" in option:
                resolved[key] = self.quantity(UNIT_PARSERS[option["x-unit"]], options[key], (*path, key))
        return resolved

    def endpoint(self, text: str, devices: Mapping[str, DeviceSpec], path: KeyPath) -> Endpoint:
        device_name, port = text.split("/")
        device = devices.get(device_name)
        if device is None:
            self.fail(path, f"no device named {device_name!r}; devices: {_listing(sorted(devices))}")
        if port not in device.ports:
            self.fail(
                path, f"device {device_name!r} has no port {port!r}; its ports: {_listing(device.ports)}"
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
                        f"port {end} is already linked at {key_path(used_at[end])}; a port takes one link",
                    )
                used_at[end] = (*path, key)
            name = spec.get("name", f"{a}--{z}")
            if name in index_of_name:
                self.fail(
                    (*path, "name"),
                    f"duplicate link name {name!r} (also links[{index_of_name[name]}]); names must be unique",
                )
            index_of_name[name] = index
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
            if name in index_of_name:
                self.fail(
                    (*path, "name"),
                    f"duplicate flow name {name!r} (also flows[{index_of_name[name]}]); names must be unique",
                )
            index_of_name[name] = index
            src = self.endpoint(spec["src"], by_name, (*path, "src"))
            if by_name[src.device].kind != "tester":
                self.fail(
                    (*path, "src"),
                    f"device {src.device!r} is a {by_name[src.device].kind}, not a tester; "
                    "flows are sent by testers",
                )
            if src not in linked:
                self.fail((*path, "src"), f"port {src} is not connected by any link; a flow's source must be")
            rate_bps = self.quantity(parse_rate, spec["rate"], (*path, "rate"))
            frame_bytes = self.above_zero(parse_size, spec.get("frame", DEFAULT_FRAME), (*path, "frame"))
            flows.append(
                FlowSpec(
                    name=name,
                    src=src,
                    dst=self.endpoint(spec["dst"], by_name, (*path, "dst")),
                    rate_bps=rate_bps,
                    frame_bytes=frame_bytes,
                    start_ps=self.quantity(parse_time_ps, spec.get("start", 0), (*path, "start")),
                    count=self.frame_count(spec, rate_bps, frame_bytes, path),
                    priority=spec.get("priority", 0),
                )
            )
        return tuple(flows)

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
            if spec["link"] not in link_names:
                self.fail(
                    (*path, "link"), f"no link named {shown(spec['link'])}; links: {_listing(link_names)}"
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
    return "scenario" if source.startswith("<") else Path(source).stem
