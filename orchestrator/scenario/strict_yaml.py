"""Pass 1: the scenario file's text as YAML, strictly.

PyYAML's safe loader, refusing what it would let through silently: duplicate keys (it keeps the last one),
a merge key (``<<``) that overrides a key, keys that are not text, numbers that are not finite or do not fit
64 bits, and files past the limits below, checked while YAML composes them.
"""

from __future__ import annotations

import math
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from orchestrator.errors import KeyPath, KeyProblem, ScenarioError, key_path

_YAML_STR = "tag:yaml.org,2002:str"
_YAML_MERGE = "tag:yaml.org,2002:merge"
_YAML_INT = "tag:yaml.org,2002:int"
_YAML_FLOAT = "tag:yaml.org,2002:float"

# Limits on what a scenario file may hold, checked while YAML composes it: before aliases expand
# into the values the later passes walk (a "billion laughs" file is a few hundred bytes).
MAX_ALIASES = 1000  # scenarios here use one (*centre); a thousand allows any reuse a person writes
MAX_VALUES = 500_000  # values once aliases are written out: more than a 1 MiB file holds written out
MAX_DEPTH = 64  # levels of nesting: the deepest scenario key is 8 levels down
MAX_INT = 2**63  # whole numbers fit 64 bits, as the hosts, protobuf and JSON readers hold them
MAX_INT_DIGITS = 30  # longer numbers are refused before Python converts them (it refuses past 4,300 digits)


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

    def limit(self, problem: str) -> KeyProblem:
        return KeyProblem(tuple(self.path[:4]), problem)  # deeper keys would make a long line

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
                        raise KeyProblem((*path, key), (
                            f"given twice through merge keys (<<), at line {' and '.join(map(str, lines))}; keys "
                            "must be unique, and a merge must not override a key"))
                    merged[key] = (merge_line, line)
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _YAML_MERGE:
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                raise KeyProblem(path, f"the key at line {line} is not text; keys are names")
            key = key_node.value
            if key_node.tag != _YAML_STR:
                read_as = key_node.tag.rsplit(":", 1)[-1]
                raise KeyProblem(
                    (*path, key), f"key at line {line} is read by YAML as {read_as}, not text; put it in quotes"
                )
            if key in first_line:
                raise KeyProblem(
                    (*path, key),
                    f"duplicate key at line {line} (first at line {first_line[key]}); keys must be unique",
                )
            if key in merged:
                raise KeyProblem((*path, key), (
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
                raise KeyProblem(path, f"{written} does not fit 64 bits; numbers may be at most {MAX_INT - 1}")
        elif node.tag == _YAML_FLOAT and not math.isfinite(self.construct_yaml_float(node)):
            raise KeyProblem(path, (
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


def read_yaml(text: str, source: str) -> Any:
    """The document the text holds, or a one-line error naming ``source`` and where."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # _StrictLoader is a SafeLoader
    except KeyProblem as e:
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

