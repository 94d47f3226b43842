"""gNMI on a device host: Capabilities, Get, Set, Subscribe over the devices the host runs.

The stubs are pygnmi's (the openconfig gnmi.proto, package ``gnmi``), so a stock client speaks to
it as to a router. ``prefix.target`` picks the device; a host with one device needs none.
Telemetry timestamps are virtual time in ns. A Set is checked at once and put in force at the
host's next window boundary (between windows nothing runs); ``ManagementState.inputs`` records
each applied change with the virtual time it took effect.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from pygnmi.spec.v080 import gnmi_pb2, gnmi_pb2_grpc

from emulators.kernel.device import Device
from emulators.runtime import INPUT_KEYS, HostRuntime
from services import gnmi_paths
from services.gnmi_paths import Change, InvalidPath, InvalidValue, Path, PathNotFound
from services.interceptors import bearer_ok

log = structlog.get_logger("gnmi")

GNMI_VERSION = "0.8.0"
SERVICE_NAME = "gnmi.gNMI"
DEFAULT_SAMPLE_NS = 1_000_000  # 1 ms of virtual time when a subscription names no interval
ENCODINGS = {gnmi_pb2.JSON: "JSON", gnmi_pb2.JSON_IETF: "JSON_IETF", gnmi_pb2.PROTO: "PROTO"}
ORIGINS = ("", "openconfig", "testbed")
SET_INDEX = 1 << 40  # timeline order of Sets: after every fault (scenario or injected) at the same time
SHARED_SET_INDEX = 1 << 56  # Sets of links between hosts: after the others, by device id then sequence
DEVICE_SHIFT = 32  # SHARED_SET_INDEX + (device id << DEVICE_SHIFT) + the host's sequence


class RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class ManagementState:
    """What gNMI shares with the window loop: Sets waiting for the next boundary, the changes
    already applied, and a signal per finished window for STREAM subscriptions."""

    token: str | None = None
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
        """Each STREAM subscription samples now, synchronously: the state is that of this boundary."""
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


def value_of(val: Any, where: str) -> Any:
    """A Set's TypedValue as Python; INVALID_ARGUMENT for what the testbed cannot take."""
    kind = val.WhichOneof("value")
    if kind in ("json_val", "json_ietf_val"):
        try:
            return json.loads(getattr(val, kind))
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"{where}: the JSON value does not parse: {e}") from None
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


class Gnmi(gnmi_pb2_grpc.gNMIServicer):
    def __init__(self, host: Any, management: ManagementState) -> None:
        self.host = host  # services.host.HostState: its runtime appears on Load
        self.management = management

    # -- helpers ----------------------------------------------------------------------------------
    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if not bearer_ok(context, self.management.token):
            raise RequestError(grpc.StatusCode.UNAUTHENTICATED,
                               "this host requires metadata 'authorization: Bearer <token>' for gNMI")

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

    def _notifications(self, runtime: HostRuntime, target: str, device: Device, patterns: list[Path],
                       encoding: int, data_type: int = gnmi_pb2.GetRequest.ALL) -> list[Any]:
        timestamp = runtime.window_end // 1000  # virtual time, ns
        out = []
        for pattern in patterns:
            try:
                found = gnmi_paths.select(device, pattern)
            except PathNotFound as e:
                raise RequestError(grpc.StatusCode.NOT_FOUND, str(e)) from None
            if data_type == gnmi_pb2.GetRequest.CONFIG:
                found = [leaf for leaf in found if any(name == "config" for name, _ in leaf[0])]
            elif data_type in (gnmi_pb2.GetRequest.STATE, gnmi_pb2.GetRequest.OPERATIONAL):
                found = [leaf for leaf in found if all(name != "config" for name, _ in leaf[0])]
            updates = [gnmi_pb2.Update(path=to_proto_path(p), val=typed(v, encoding)) for p, v in found]
            out.append(gnmi_pb2.Notification(timestamp=timestamp, prefix=gnmi_pb2.Path(target=target),
                                             update=updates))
        return out

    # -- the four RPCs ----------------------------------------------------------------------------
    async def Capabilities(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._authorize(context)
        except RequestError as e:
            await context.abort(e.code, e.message)
        return gnmi_pb2.CapabilityResponse(
            supported_models=[gnmi_pb2.ModelData(name="openconfig-interfaces", organization="OpenConfig working group"),
                              gnmi_pb2.ModelData(name="aicn-testbed", organization="aicn-testbed", version="1")],
            supported_encodings=sorted(ENCODINGS), gNMI_version=GNMI_VERSION)

    async def Get(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._authorize(context)
            runtime = self._runtime()
            encoding = check_encoding(request.encoding)
            if request.type not in gnmi_pb2.GetRequest.DataType.values():
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"data type {request.type} is unknown")
            target = request.prefix.target
            device = self._device(runtime, target)
            patterns = [path_of(request.prefix, p) for p in request.path] or [path_of(request.prefix, gnmi_pb2.Path())]
            notifications = self._notifications(runtime, target, device, patterns, encoding, request.type)
        except RequestError as e:
            await context.abort(e.code, e.message)
        return gnmi_pb2.GetResponse(notification=notifications)

    async def Set(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._authorize(context)
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
            try:
                changes = gnmi_paths.plan_set(device, updates, runtime.local_links)
            except PathNotFound as e:
                raise RequestError(grpc.StatusCode.NOT_FOUND, str(e)) from None
            except InvalidValue as e:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        except RequestError as e:
            await context.abort(e.code, e.message)
        self.management.pending.extend(changes)  # all or nothing: every update was checked first
        return gnmi_pb2.SetResponse(prefix=request.prefix, response=results, timestamp=runtime.window_end // 1000)

    async def Subscribe(self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        try:
            self._authorize(context)
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("request") != "subscribe":
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "the first SubscribeRequest must be a subscribe")
            runtime = self._runtime()
            spec = first.subscribe
            encoding = check_encoding(spec.encoding)
            if spec.mode not in gnmi_pb2.SubscriptionList.Mode.values():
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"subscription list mode {spec.mode} is unknown")
            target = spec.prefix.target
            device = self._device(runtime, target)
            subs = [(path_of(spec.prefix, s.path), s) for s in spec.subscription] or \
                [(path_of(spec.prefix, gnmi_pb2.Path()), gnmi_pb2.Subscription())]
            patterns = [p for p, _ in subs]
            initial = self._notifications(runtime, target, device, patterns, encoding)
            timestamp = runtime.window_end // 1000
        except RequestError as e:
            await context.abort(e.code, e.message)
        if spec.mode != gnmi_pb2.SubscriptionList.STREAM:
            for n in initial:
                yield gnmi_pb2.SubscribeResponse(update=n)
            yield gnmi_pb2.SubscribeResponse(sync_response=True)
            if spec.mode == gnmi_pb2.SubscriptionList.POLL:
                async for poll in request_iterator:
                    if poll.WhichOneof("request") != "poll":
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                            "a POLL subscription takes only poll requests")
                    for n in self._poll(runtime, target, device, patterns, encoding):
                        yield gnmi_pb2.SubscribeResponse(update=n)
                    yield gnmi_pb2.SubscribeResponse(sync_response=True)
            return
        # registered before anything is sent: no window boundary after the initial state is missed
        sample, samples = self._sampler(runtime, target, device, subs, encoding, first_ns=timestamp)
        self.management.samplers.add(sample)
        try:
            for n in initial:
                yield gnmi_pb2.SubscribeResponse(update=n)
            yield gnmi_pb2.SubscribeResponse(sync_response=True)
            while True:
                yield await samples.get()
        finally:
            self.management.samplers.discard(sample)

    def _poll(self, runtime: HostRuntime, target: str, device: Device, patterns: list[Path],
              encoding: int) -> list[Any]:
        try:
            return self._notifications(runtime, target, device, patterns, encoding)
        except RequestError:
            return []  # a path that named something at subscription time may not now: nothing to send

    def _sampler(self, runtime: HostRuntime, target: str, device: Device, subs: list[tuple[Path, Any]],
                 encoding: int, first_ns: int) -> tuple[Callable[[int], None], asyncio.Queue[Any]]:
        """One sample per subscription each time a window boundary reaches its next sample time (a
        multiple of its interval, virtual ns); the sample is the state at that boundary, taken by the
        window loop itself, so a slow reader gets late samples, never wrong ones."""
        intervals = [s.sample_interval or DEFAULT_SAMPLE_NS for _, s in subs]
        due = [(first_ns // i + 1) * i for i in intervals]
        samples: asyncio.Queue[Any] = asyncio.Queue()

        def sample(window_end_ps: int) -> None:
            now_ns = window_end_ps // 1000
            for k, (pattern, _) in enumerate(subs):
                if now_ns >= due[k]:
                    due[k] = (now_ns // intervals[k] + 1) * intervals[k]
                    for n in self._poll(runtime, target, device, [pattern], encoding):
                        samples.put_nowait(gnmi_pb2.SubscribeResponse(update=n))

        return sample, samples
