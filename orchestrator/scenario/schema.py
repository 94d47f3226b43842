"""Pass 2: the JSON Schema of scenario files (``schema.json``, draft 2020-12), the first problem explained."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

from orchestrator.errors import KeyProblem
from orchestrator.scenario.schema_errors import first_schema_problem


@functools.cache
def scenario_schema() -> dict[str, Any]:
    """The JSON Schema of scenario files (draft 2020-12). Shared: read it, never change it."""
    schema: dict[str, Any] = json.loads(
        resources.files(__package__).joinpath("schema.json").read_text("utf-8")
    )
    return schema


def check_against_schema(document: Any) -> None:
    """Refuse the document's first schema violation, at its key path."""
    found = first_schema_problem(Draft202012Validator(scenario_schema()), document)
    if found is not None:
        raise KeyProblem(*found)


def definition(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """A property's schema with the shared definition it refers to (``#/$defs/NAME``) filled in; its own
    keys (a description, ``x-nonzero``) win."""
    if "$ref" not in schema:
        return schema
    shared = scenario_schema()["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return {**shared, **{key: value for key, value in schema.items() if key != "$ref"}}
