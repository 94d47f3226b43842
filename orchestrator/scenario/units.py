"""Pass 3: every quantity a schema marks with ``x-unit`` converted to an integer (bps, bytes, mm, ps) or a
ratio (BER), walking the document by its schema.

One walker for the whole scenario file, links, flows, faults and building blocks included, run once before
the building blocks expand, and for each device's options with its kind's schema once the kind is known.
A field may say more in the schema: ``x-nonzero`` refuses 0, ``x-min`` a smaller value (written with its
unit), ``x-zero-allowed`` lets 0 through where the unit refuses it (an rdma flow's rate: as fast as can be).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from emulators.model.units import RATE, parse_ber, parse_length_mm, parse_rate, parse_size, parse_time_ps, shown
from orchestrator.errors import KeyPath, KeyProblem
from orchestrator.scenario.schema import definition, scenario_schema

UNIT_PARSERS: dict[str, Callable[[Any], int | float]] = {
    "rate": parse_rate,
    "size": parse_size,
    "length": parse_length_mm,
    "time": parse_time_ps,
    "ber": parse_ber,
}
# the parser of a unit whose own refuses 0, for fields marked x-zero-allowed
_ZERO_ALLOWED: dict[str, Callable[[Any], int | float]] = {"rate": RATE.parse}


def convert_units(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of a schema-valid scenario document with every quantity converted; device options stay as
    written (their kind converts them, :func:`convert`)."""
    converted: dict[str, Any] = convert(scenario_schema(), document, ())
    return converted


def convert(schema: Mapping[str, Any], value: Any, path: KeyPath) -> Any:
    """A copy of ``value`` with every quantity its schema marks with ``x-unit`` converted, at any depth."""
    schema = definition(schema)
    if "x-unit" in schema:
        return _quantity(schema, value, path)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        others = schema.get("additionalProperties")
        others = others if isinstance(others, dict) else {}
        return {key: convert(properties.get(key, others), item, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        items = schema.get("items")
        items = items if isinstance(items, dict) else {}
        return [convert(items, item, (*path, index)) for index, item in enumerate(value)]
    return value


def unit_problem(parse: Callable[[Any], Any], value: Any) -> str:
    """What ``parse`` says is wrong with ``value``: a check that finds a converted value wrong says it as
    the unit pass would have."""
    try:
        parse(value)
    except ValueError as e:
        return str(e)
    raise AssertionError(f"{value!r} parses")


def _quantity(schema: Mapping[str, Any], value: Any, path: KeyPath) -> int | float:
    unit = schema["x-unit"]
    parse = _ZERO_ALLOWED[unit] if schema.get("x-zero-allowed") else UNIT_PARSERS[unit]
    try:
        amount = parse(value)
    except ValueError as e:
        raise KeyProblem(path, str(e)) from None
    if schema.get("x-nonzero") and amount == 0:
        raise KeyProblem(path, f"{shown(value)} is zero; it must be above zero")
    if "x-min" in schema and amount < parse(schema["x-min"]):
        raise KeyProblem(path, f"{shown(value)} is less than {schema['x-min']}, the least this option takes")
    return amount
