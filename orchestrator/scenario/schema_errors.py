"""Schema violations explained for a person: a key path and what is allowed, never a raw dump."""

from __future__ import annotations

import difflib
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from emulators.model.units import shown
from orchestrator.errors import KeyPath

_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}


def first_schema_problem(validator: Draft202012Validator, instance: Any) -> tuple[KeyPath, str] | None:
    """The problem that comes first in the document, explained for a person; None when valid."""
    problems = [_explain(error) for error in validator.iter_errors(instance)]
    if not problems:
        return None
    return min(problems, key=lambda found: _document_order(instance, found[0]))


def _document_order(document: Any, path: KeyPath) -> tuple[int, ...]:
    """Where a key path sits in the file: a missing key sorts after its siblings."""
    order = []
    node = document
    for key in path:
        if isinstance(node, dict) and key in node:
            order.append(list(node).index(key))
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            order.append(key)
            node = node[key]
        else:
            order.append(len(node) if isinstance(node, dict | list) else 0)
            node = None
    return tuple(order)


def _explain(error: ValidationError) -> tuple[KeyPath, str]:
    """A jsonschema error as (key path, what is wrong and what is allowed); never the raw instance."""
    path: KeyPath = tuple(error.absolute_path)
    instance: Any = error.instance
    rule: Any = error.validator_value
    schema = error.schema if isinstance(error.schema, dict) else {}
    expected = schema.get("x-expect")
    if "propertyNames" in error.absolute_schema_path:  # the instance is the key itself
        path = (*path, instance)

    match error.validator:
        case "additionalProperties":
            allowed = list(schema.get("properties", {}))
            unknown = next((key for key in instance if key not in allowed), None)
            if unknown is None:  # refused by patternProperties, which our schemas do not use
                return path, "has a key that is not allowed here"
            close = difflib.get_close_matches(str(unknown), allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return (*path, unknown), f"unknown key{hint}; allowed: {', '.join(allowed)}"
        case "required":
            missing = next((key for key in rule if key not in instance), rule[0])
            return (*path, missing), "required key is missing"
        case "type":
            types = [rule] if isinstance(rule, str) else rule
            wanted = expected or " or ".join(_TYPE_WORDS.get(t, t) for t in types)
            return path, f"expected {wanted}, got {shown(instance)}"
        case "enum":
            return path, f"{shown(instance)} is not allowed; allowed: {', '.join(map(str, rule))}"
        case "const":
            return path, f"{shown(instance)} is not allowed; the only allowed value is {rule}"
        case "pattern":
            return path, f"{shown(instance)} is not {expected or f'text matching {rule}'}"
        case "minimum":
            return path, f"{shown(instance)} is too small; the minimum is {rule}"
        case "maximum":
            return path, f"{shown(instance)} is too large; the maximum is {rule}"
        case "exclusiveMinimum":
            return path, f"{shown(instance)} is too small; it must be above {rule}"
        case "exclusiveMaximum":
            return path, f"{shown(instance)} is too large; it must be below {rule}"
        case "minItems":
            return path, f"has {len(instance)} entries; at least {rule} needed"
        case "maxItems":
            return path, f"has {len(instance)} entries; at most {rule} allowed"
        case "minLength":
            return path, "is empty; write at least one character"
        case "maxLength":  # the path without the key itself: it is shown, cut short
            long = f"{shown(instance)} is {len(instance)} characters long"
            return tuple(error.absolute_path), f"{long}; at most {rule} allowed"
        case "uniqueItems":
            index = next((i for i, item in enumerate(instance) if item in instance[:i]), 0)
            return (*path, index), f"{shown(instance[index])} is listed twice; entries must be unique"
        case "oneOf":
            return _explain_one_of(path, instance, rule)
    return path, f"not allowed here (fails the schema's {error.validator} rule)"


def _explain_one_of(path: KeyPath, instance: Any, choices: list[dict[str, Any]]) -> tuple[KeyPath, str]:
    # Our schema uses oneOf only as "exactly one of these keys": [{"required": [k]}, ...].
    keys = [key for choice in choices for key in choice.get("required", [])]
    given = [key for key in keys if isinstance(instance, dict) and key in instance]
    if not given:
        return path, f"needs exactly one of: {', '.join(keys)}"
    if len(given) == 1:
        return path, f"does not fit any allowed form; give exactly one of: {', '.join(keys)}"
    return (*path, given[1]), f"conflicts with {given[0]}; give exactly one of: {', '.join(keys)}"
