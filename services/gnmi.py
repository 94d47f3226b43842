"""gNMI on a device host: Capabilities, Get, Set, Subscribe over the devices the host runs.

The stubs are pygnmi's (the openconfig gnmi.proto, package ``gnmi``), so a stock client speaks to
it as to a router. ``prefix.target`` picks the device; a host with one device needs none.
Telemetry timestamps are virtual time in ns. A Set is checked at once and put in force at the
host's next window boundary (between windows nothing runs); ``ManagementState.inputs`` records
each applied change with the virtual time it took effect.

Every request is bounded (bytes, paths, leaves read) and a STREAM subscriber's backlog too: a reader
that falls behind is dropped with RESOURCE_EXHAUSTED; the window loop never waits for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
import structlog
from pygnmi.spec.v080 import gnmi_pb2, gnmi_pb2_grpc

from emulators.kernel.device import Device
from emulators.runtime import INPUT_KEYS, HostRuntime
from services import gnmi_paths
from services.gnmi_paths import Change, InvalidPath, InvalidValue, Leaf, Path, PathNotFound, Snapshot

log = structlog.get_logger("gnmi")

GNMI_VERSION = "0.8.0"
SERVICE_NAME = "gnmi.gNMI"
DEFAULT_SAMPLE_NS = 1_000_000  # 1 ms of virtual time when a subscription names no interval
ENCODINGS = {gnmi_pb2.JSON: "JSON", gnmi_pb2.JSON_IETF: "JSON_IETF", gnmi_pb2.PROTO: "PROTO"}
ORIGINS = ("", "openconfig", "testbed")
SET_INDEX = 1 << 40  # timeline order of Sets: after every fault (scenario or injected) at the same time
SHARED_SET_INDEX = 1 << 56  # Sets of links between hosts: after the others, by device id then sequence
DEVICE_SHIFT = 32  # SHARED_SET_INDEX + (device id << DEVICE_SHIFT) + the host's sequence

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
# JSON values from a client (a Set's value here, a fault in the control service), INVALID_ARGUMENT beyond
MAX_JSON_DEPTH = 32  # nesting: a Set's container or a fault needs three or four
MAX_JSON_DIGITS = 40  # digits of an integer: 2**128 has 39; int() of a long digit string is slow (and limited)
MAX_MESSAGE_CHARS = 500  # of an error message quoting a client's text: clients take 8 KiB of status, percent-encoded


def clipped(message: str) -> str:
    """``message`` cut to MAX_MESSAGE_CHARS: what fits a gRPC status."""
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS - 1] + "…"


class RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = clipped(message)


@dataclass
class ManagementState:
    """What gNMI shares with the window loop: Sets waiting for the next boundary, the changes
    already applied, and a signal per finished window for STREAM subscriptions."""

    pending: list[Change] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    samplers: set[Callable[[int], None]] = field(default_factory=set)  # STREAM subscriptions

    def apply_pending(self, runtime: HostRuntime, window: int, at_ps: int, end_ps: int) -> None:
        """Put the waiting Sets in force at ``at_ps`` (the start of the window about to run, to
        ``end_ps``: nothing may act earlier), before any event at that time (a change on the engine's
        timeline, as faults are, ordered after them). A link between hosts changes rate at
        ``end_ps`` instead, on both sides: the other host may be running this window already, and
        hears of it with the next. A Set that would take effect at or after the run's end is dropped
        (the run is over) and not recorded."""
        duration = runtime.scenario.duration_ps
        for change in self.pending:
            if (end_ps if change.shared else at_ps) >= duration:
                log.warning("gNMI Set too late: the run ends before it can take effect", device=change.device,
                            path=change.path)
                continue
            seq = len(self.inputs)
            if seq >= 1 << DEVICE_SHIFT:
                raise ValueError(f"{len(self.inputs)} gNMI Sets on one host: no more can be ordered")
            record = {"seq": seq, "at_ps": at_ps, "window": window, "kind": "gnmi-set", "device": change.device,
                      "path": change.path, "value": change.value}
            if change.shared:
                index = SHARED_SET_INDEX + (runtime.devices[change.device].id << DEVICE_SHIFT) + seq
                runtime.add_link_rate(end_ps, index, change.link, change.rate_bps)
                runtime.post_input(end_ps, INPUT_KEYS + index, {"link_rate": {
                    "link": change.link, "rate_bps": change.rate_bps, "index": index}})
                record["at_ps"] = end_ps
            else:
                index = SET_INDEX + seq
                runtime.engine.add_change(at_ps, index, change.apply)
            record["index"] = index
            if change.link:
                record |= {"link": change.link, "rate_bps": change.rate_bps}
            self.inputs.append(record)
        self.pending.clear()

    def finished_window(self, window_end_ps: int) -> None:
        """Each STREAM subscription samples now, synchronously: the state is that of this boundary.
        Samples are queued, never awaited: a reader that falls behind is dropped, not waited for."""
        for sample in list(self.samplers):
            try:
                sample(window_end_ps)
            except Exception:  # a telemetry bug must not stop the run: that subscription ends quietly
                log.exception("telemetry sample failed; dropping the subscription")
                self.samplers.discard(sample)


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


def read_json(text: str | bytes, what: str) -> Any:
    """JSON from a management client; ValueError saying what of ``what`` is wrong: not JSON, NaN or a
    number out of range, an integer of more than MAX_JSON_DIGITS digits, or nesting deeper than
    MAX_JSON_DEPTH (the size is the caller's to bound)."""

    def integer(digits: str) -> int:
        count = len(digits.lstrip("-"))
        if count > MAX_JSON_DIGITS:
            raise ValueError(f"{what} has an integer of {count} digits; at most {MAX_JSON_DIGITS} are taken")
        return int(digits)

    def real(digits: str) -> float:
        number = float(digits)
        if not math.isfinite(number):
            raise ValueError(f"{what} has {digits[:24]}, beyond the range of a number")
        return number

    def constant(name: str) -> Any:
        raise ValueError(f"{what} has {name}, which is not a number")

    deep = ValueError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(text, parse_int=integer, parse_float=real, parse_constant=constant)
    except RecursionError:
        raise deep from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} is not JSON: {e}") from None
    containers = [(value, 1)]
    while containers:
        item, depth = containers.pop()
        inner = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if inner is None:
            continue
        if depth > MAX_JSON_DEPTH:
            raise deep
        containers += [(x, depth + 1) for x in inner]
    return value


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


def updating(responses: list[Any]) -> Any:
    """A new SubscribeResponse at the end of ``responses``: its notification, to fill."""
    responses.append(gnmi_pb2.SubscribeResponse())
    return responses[-1].update


def check_encoding(encoding: int) -> int:
    if encoding not in ENCODINGS:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"encoding {encoding} is not supported; use one of {', '.join(ENCODINGS.values())}")
    return encoding


class Subscriber:
    """A STREAM subscription's samples that gRPC has not taken yet. The window loop adds to them and
    never waits: past MAX_QUEUED_LEAVES (a reader too slow, or gone) they are freed and the stream
    ends with RESOURCE_EXHAUSTED, ended from outside the handler, which may be stuck on a full stream."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self.context = context
        self.queue: deque[Any] = deque()
        self.leaves = 0
        self.ready = asyncio.Event()
        self.ending: asyncio.Task[None] | None = None

    def put(self, response: Any) -> bool:
        """Queue a sample; False once the subscriber is dropped (this one or an earlier one overflowed)."""
        if self.ending is not None:
            return False
        self.leaves += len(response.update.update)
        if self.leaves > MAX_QUEUED_LEAVES:
            self.queue.clear()
            message = (f"this subscriber left more than {MAX_QUEUED_LEAVES} sampled leaves unread "
                       f"(MAX_QUEUED_LEAVES); read faster, or subscribe to fewer paths or a longer sample_interval")
            log.warning("gNMI subscriber dropped", peer=self.context.peer(), reason="MAX_QUEUED_LEAVES")
            self.ending = asyncio.ensure_future(self._end(message))
        else:
            self.queue.append(response)
        self.ready.set()
        return self.ending is None

    async def _end(self, message: str) -> None:
        with contextlib.suppress(grpc.aio.AbortError):  # raised to stop a handler; here the status is the point
            await self.context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    async def responses(self) -> AsyncIterator[Any]:
        while True:
            await self.ready.wait()
            self.ready.clear()
            while self.queue:
                response = self.queue.popleft()
                self.leaves -= len(response.update.update)
                yield response
            if self.ending is not None:
                await self.ending
                return


class Gnmi(gnmi_pb2_grpc.gNMIServicer):
    def __init__(self, host: Any, management: ManagementState) -> None:
        self.host = host  # services.host.HostState: its runtime appears on Load
        self.management = management
        self.subscriptions = 0  # Subscribe streams open
        self._streams: dict[Callable[[int], None], int] = {}  # STREAM samplers and the leaves each looks at
        self._proto_paths: dict[Path, Any] = {}  # leaf paths as protobuf, built once: most of a reply's cost

    # -- helpers ----------------------------------------------------------------------------------
    def _runtime(self) -> HostRuntime:
        runtime: HostRuntime | None = self.host.runtime
        if runtime is None:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"host {self.host.name} has no scenario loaded yet: no device to manage")
        return runtime

    def _device(self, runtime: HostRuntime, target: str) -> Device:
        if not target:
            if len(runtime.devices) == 1:
                return next(iter(runtime.devices.values()))
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"host {self.host.name} runs {len(runtime.devices)} devices: set prefix.target to "
                               f"one of {', '.join(sorted(runtime.devices))}")
        device = runtime.devices.get(target)
        if device is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no device {target!r} on host {self.host.name}; "
                                                          f"it runs {', '.join(sorted(runtime.devices))}")
        return device

    @staticmethod
    def _bounded(request: Any, paths: int, what: str) -> None:
        """RESOURCE_EXHAUSTED for a request over MAX_REQUEST_BYTES or with more than MAX_PATHS ``what``."""
        size = request.ByteSize()
        if size > MAX_REQUEST_BYTES:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"the request is {size} bytes; gNMI takes at most {MAX_REQUEST_BYTES} "
                               f"(MAX_REQUEST_BYTES)")
        if paths > MAX_PATHS:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"the request has {paths} {what}; at most {MAX_PATHS} are taken (MAX_PATHS): split it")

    @staticmethod
    def _affordable(snapshot: Snapshot, patterns: list[Path]) -> int:
        """The leaves reading ``patterns`` looks at; RESOURCE_EXHAUSTED beyond MAX_LEAVES."""
        leaves = sum(len(snapshot.candidates(p)) for p in patterns)
        if leaves > MAX_LEAVES:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"the {len(patterns)} paths cover {leaves} leaves of {snapshot.device.name}; at most "
                               f"{MAX_LEAVES} are read per request (MAX_LEAVES): ask for fewer or narrower paths")
        return leaves

    @staticmethod
    def _selected(snapshot: Snapshot, pattern: Path, data_type: int = gnmi_pb2.GetRequest.ALL) -> list[Leaf]:
        try:
            found = snapshot.select(pattern)
        except PathNotFound as e:
            raise RequestError(grpc.StatusCode.NOT_FOUND, str(e)) from None
        if data_type == gnmi_pb2.GetRequest.CONFIG:
            return [leaf for leaf in found if any(name == "config" for name, _ in leaf[0])]
        if data_type in (gnmi_pb2.GetRequest.STATE, gnmi_pb2.GetRequest.OPERATIONAL):
            return [leaf for leaf in found if all(name != "config" for name, _ in leaf[0])]
        return found

    def _write(self, notification: Any, found: list[Leaf], timestamp: int, target: str, encoding: int) -> None:
        """``found`` into ``notification``, built in place: a copy of a large reply costs as much again."""
        notification.timestamp = timestamp
        notification.prefix.target = target
        paths = self._proto_paths
        if len(paths) > MAX_LEAVES:  # leaf paths are the devices' own, so this hardly happens
            paths.clear()
        updates = notification.update
        for path, value in found:
            proto = paths.get(path)
            if proto is None:
                proto = paths[path] = to_proto_path(path)
            updates.add(path=proto, val=typed(value, encoding))

    async def _read(self, add: Callable[[], Any], snapshot: Snapshot, timestamp: int, target: str,
                    patterns: list[Path], encoding: int, data_type: int = gnmi_pb2.GetRequest.ALL,
                    skip_missing: bool = False) -> None:
        """Write the leaves of each pattern, all of one snapshot, into a notification from ``add()``,
        letting the event loop run every LEAVES_PER_STEP leaves looked at. NOT_FOUND for a pattern
        that names nothing, unless ``skip_missing``: then it adds none."""
        done = 0
        for pattern in patterns:
            try:
                found = self._selected(snapshot, pattern, data_type)
            except RequestError:
                if skip_missing:
                    continue
                raise
            self._write(add(), found, timestamp, target, encoding)
            done += len(snapshot.candidates(pattern))
            if done >= LEAVES_PER_STEP:
                done = 0
                await asyncio.sleep(0)

    # -- the four RPCs ----------------------------------------------------------------------------
    async def Capabilities(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return gnmi_pb2.CapabilityResponse(
            supported_models=[gnmi_pb2.ModelData(name="openconfig-interfaces", organization="OpenConfig working group"),
                              gnmi_pb2.ModelData(name="aicn-testbed", organization="aicn-testbed", version="1")],
            supported_encodings=sorted(ENCODINGS), gNMI_version=GNMI_VERSION)

    async def Get(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._bounded(request, len(request.path), "paths")
            runtime = self._runtime()
            encoding = check_encoding(request.encoding)
            if request.type not in gnmi_pb2.GetRequest.DataType.values():
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"data type {request.type} is unknown")
            target = request.prefix.target
            device = self._device(runtime, target)
            patterns = [path_of(request.prefix, p) for p in request.path] or [path_of(request.prefix, gnmi_pb2.Path())]
            snapshot = Snapshot(device)  # the state of this boundary, though windows may run while it is read
            self._affordable(snapshot, patterns)
            response = gnmi_pb2.GetResponse()
            await self._read(response.notification.add, snapshot, runtime.window_end // 1000, target, patterns,
                             encoding, request.type)
        except RequestError as e:
            await context.abort(e.code, e.message)
        return response

    async def Set(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._bounded(request, len(request.replace) + len(request.update) + len(request.delete), "updates")
            runtime = self._runtime()
            device = self._device(runtime, request.prefix.target)
            if request.delete:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   "delete is not supported: configuration leaves always have a value; replace it")
            results, updates = [], []
            for op, items in ((gnmi_pb2.UpdateResult.REPLACE, request.replace),
                              (gnmi_pb2.UpdateResult.UPDATE, request.update)):
                for update in items:
                    path = path_of(request.prefix, update.path)
                    if not path:
                        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "a Set needs a path below the root")
                    value = value_of(update.val, gnmi_paths.render(path))
                    try:
                        updates += gnmi_paths.expand(path, value)
                    except InvalidValue as e:
                        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
                    results.append(gnmi_pb2.UpdateResult(path=update.path, op=op))
            if len(updates) > MAX_PATHS:
                raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"the Set's values name {len(updates)} leaves; at most {MAX_PATHS} are taken "
                                   f"(MAX_PATHS): split it")
            try:
                changes = gnmi_paths.plan_set(device, updates, runtime.local_links)
            except PathNotFound as e:
                raise RequestError(grpc.StatusCode.NOT_FOUND, str(e)) from None
            except InvalidValue as e:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
            if len(self.management.pending) + len(changes) > MAX_PENDING:
                raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"{len(self.management.pending)} changes already wait for the next window "
                                   f"boundary; at most {MAX_PENDING} may (MAX_PENDING): let the run go on first")
        except RequestError as e:
            await context.abort(e.code, e.message)
        self.management.pending.extend(changes)  # all or nothing: every update was checked first
        return gnmi_pb2.SetResponse(prefix=request.prefix, response=results, timestamp=runtime.window_end // 1000)

    async def Subscribe(self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        try:
            if self.subscriptions >= MAX_SUBSCRIPTIONS:
                raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"host {self.host.name} serves {self.subscriptions} subscriptions, as many as it "
                                   f"takes (MAX_SUBSCRIPTIONS); close one first")
        except RequestError as e:
            await context.abort(e.code, e.message)
        self.subscriptions += 1
        try:
            async with contextlib.aclosing(self._subscription(request_iterator, context)) as responses:
                async for response in responses:
                    yield response
        finally:
            self.subscriptions -= 1

    async def _subscription(self, request_iterator: AsyncIterator[Any],
                            context: grpc.aio.ServicerContext) -> AsyncGenerator[Any, None]:
        sample = None
        try:
            try:
                first = await anext(aiter(request_iterator), None)
                if first is None or first.WhichOneof("request") != "subscribe":
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                       "the first SubscribeRequest must be a subscribe")
                spec = first.subscribe
                self._bounded(first, len(spec.subscription), "subscriptions")
                runtime = self._runtime()
                encoding = check_encoding(spec.encoding)
                if spec.mode not in gnmi_pb2.SubscriptionList.Mode.values():
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"subscription list mode {spec.mode} is unknown")
                target = spec.prefix.target
                device = self._device(runtime, target)
                subs = [(path_of(spec.prefix, s.path), s) for s in spec.subscription] or \
                    [(path_of(spec.prefix, gnmi_pb2.Path()), gnmi_pb2.Subscription())]
                patterns = [p for p, _ in subs]
                snapshot = Snapshot(device)
                leaves = self._affordable(snapshot, patterns)
                timestamp = runtime.window_end // 1000
                if spec.mode == gnmi_pb2.SubscriptionList.STREAM:
                    sampled = sum(n for f, n in self._streams.items() if f in self.management.samplers)
                    if sampled + leaves > MAX_LEAVES:
                        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, (
                            f"the STREAM subscriptions of host {self.host.name} sample {sampled} leaves already; "
                            f"this one would add {leaves}, past {MAX_LEAVES} (MAX_LEAVES): subscribe to fewer or "
                            f"narrower paths"))
                    # registered at the snapshot: no window boundary after the initial state is missed
                    subscriber = Subscriber(context)
                    sample = self._sampler(runtime, target, device, subs, encoding, timestamp, subscriber)
                    self._streams[sample] = leaves
                    self.management.samplers.add(sample)
                initial: list[Any] = []
                await self._read(partial(updating, initial), snapshot, timestamp, target, patterns, encoding)
            except RequestError as e:
                await context.abort(e.code, e.message)
            for response in initial:
                yield response
            yield gnmi_pb2.SubscribeResponse(sync_response=True)
            if sample is not None:
                async for response in subscriber.responses():
                    yield response
            elif spec.mode == gnmi_pb2.SubscriptionList.POLL:
                async for poll in request_iterator:
                    if poll.WhichOneof("request") != "poll":
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                            "a POLL subscription takes only poll requests")
                    polled: list[Any] = []
                    await self._read(partial(updating, polled), Snapshot(device), runtime.window_end // 1000,
                                     target, patterns, encoding, skip_missing=True)
                    for response in polled:
                        yield response
                    yield gnmi_pb2.SubscribeResponse(sync_response=True)
        finally:
            if sample is not None:
                self.management.samplers.discard(sample)
                del self._streams[sample]

    def _sampler(self, runtime: HostRuntime, target: str, device: Device, subs: list[tuple[Path, Any]],
                 encoding: int, first_ns: int, subscriber: Subscriber) -> Callable[[int], None]:
        """One sample per subscription each time a window boundary reaches its next sample time (a
        multiple of its interval, virtual ns); the sample is the state at that boundary, taken by the
        window loop itself, so a slow reader gets late samples, never wrong ones, until it is dropped."""
        intervals = [s.sample_interval or DEFAULT_SAMPLE_NS for _, s in subs]
        due = [(first_ns // i + 1) * i for i in intervals]

        def sample(window_end_ps: int) -> None:
            now_ns = window_end_ps // 1000
            snapshot = None
            for k, (pattern, _) in enumerate(subs):
                if now_ns >= due[k]:
                    due[k] = (now_ns // intervals[k] + 1) * intervals[k]
                    snapshot = snapshot or Snapshot(device)
                    try:
                        found = self._selected(snapshot, pattern)
                    except RequestError:
                        continue  # a path that named something at subscription time may not now
                    response = gnmi_pb2.SubscribeResponse()
                    self._write(response.update, found, now_ns, target, encoding)
                    if not subscriber.put(response):
                        self.management.samplers.discard(sample)
                        return

        return sample
