"""What a gNMI request may be, and its messages as the path layer's: the limits every request is held
to, its paths and values converted and checked, and RequestError for what a client sent wrong."""

from __future__ import annotations

import json
from typing import Any

import grpc
from pygnmi.spec.v080 import gnmi_pb2

from services import gnmi_paths
from services.client_input import clipped, read_json
from services.gnmi_paths import InvalidPath, Path

ENCODINGS = {gnmi_pb2.JSON: "JSON", gnmi_pb2.JSON_IETF: "JSON_IETF", gnmi_pb2.PROTO: "PROTO"}
ORIGINS = ("", "openconfig", "testbed")

# Limits: each answers RESOURCE_EXHAUSTED naming itself. The host's gRPC takes 1 GiB messages (frame
# batches); gNMI's own bound is checked on each request as it arrives.
MAX_REQUEST_BYTES = 1 << 20  # one gNMI request: 1,000 keyed paths take about 75 KB
MAX_PATHS = 1_000  # paths of a Get or Subscribe, updates of a Set: a device's whole state is one path
# leaves one request looks at (its paths' candidates summed: ~0.7 s, ~7 MB of reply), and leaves the STREAM
# subscriptions of a host sample at one boundary together (what the window loop spends on them)
MAX_LEAVES = 100_000
MAX_PENDING = 10_000  # Set changes waiting for the next window boundary: a client must let windows run
MAX_SUBSCRIPTIONS = 16  # open Subscribe streams per host: each STREAM one samples at the boundaries it is due
MAX_QUEUED_LEAVES = 200_000  # sampled leaves a STREAM subscriber has not taken (~16 MB): a reader so far behind is gone
LEAVES_PER_STEP = 5_000  # leaves read between two yields to the event loop (a few ms): windows run meanwhile


class RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = clipped(message)


def path_of(prefix: Any, path: Any) -> Path:
    """prefix + path as the path layer's tuples; INVALID_ARGUMENT if malformed."""
    out: list[gnmi_paths.Elem] = []
    for part in (prefix, path):
        if part.origin not in ORIGINS:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"origin {part.origin!r} is not served; use one of {', '.join(map(repr, ORIGINS))}")
        if part.element and part.elem:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "a path has either elem or element, not both")
        try:
            for text in part.element:
                out.extend(gnmi_paths.parse(text))
        except InvalidPath as e:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        for pe in part.elem:
            if not pe.name or "/" in pe.name:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"path element name {pe.name!r} is malformed")
            if any(not k for k in pe.key):
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"element {pe.name!r} has a key with no name")
            out.append((pe.name, tuple(sorted(pe.key.items()))))
    return tuple(out)


def to_proto_path(path: Path) -> Any:
    return gnmi_pb2.Path(elem=[gnmi_pb2.PathElem(name=name, key=dict(keys)) for name, keys in path])


def typed(value: Any, encoding: int) -> Any:
    if encoding == gnmi_pb2.JSON:
        return gnmi_pb2.TypedValue(json_val=json.dumps(value).encode())
    if encoding == gnmi_pb2.JSON_IETF:
        return gnmi_pb2.TypedValue(json_ietf_val=json.dumps(value).encode())
    if isinstance(value, bool):
        return gnmi_pb2.TypedValue(bool_val=value)
    if isinstance(value, int):
        return gnmi_pb2.TypedValue(uint_val=value) if value >= 0 else gnmi_pb2.TypedValue(int_val=value)
    if isinstance(value, float):
        return gnmi_pb2.TypedValue(double_val=value)
    return gnmi_pb2.TypedValue(string_val=str(value))


def value_of(val: Any, where: str) -> Any:
    """A Set's TypedValue as Python; INVALID_ARGUMENT for what the testbed cannot take."""
    kind = val.WhichOneof("value")
    if kind in ("json_val", "json_ietf_val"):
        try:
            return read_json(getattr(val, kind), f"{where}: the value")
        except ValueError as e:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
    if kind in ("uint_val", "int_val", "bool_val", "string_val", "double_val", "float_val", "ascii_val"):
        return getattr(val, kind)
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"{where}: value type {kind or 'none'} is not accepted; send json, json_ietf, uint, int, "
                       f"bool, double or string")


def check_encoding(encoding: int) -> int:
    if encoding not in ENCODINGS:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"encoding {encoding} is not supported; use one of {', '.join(ENCODINGS.values())}")
    return encoding


def bounded(request: Any, paths: int, what: str) -> None:
    """RESOURCE_EXHAUSTED for a request over MAX_REQUEST_BYTES or with more than MAX_PATHS ``what``."""
    size = request.ByteSize()
    if size > MAX_REQUEST_BYTES:
        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"the request is {size} bytes; gNMI takes at most {MAX_REQUEST_BYTES} "
                           f"(MAX_REQUEST_BYTES)")
    if paths > MAX_PATHS:
        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"the request has {paths} {what}; at most {MAX_PATHS} are taken (MAX_PATHS): split it")
