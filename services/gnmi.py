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

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from pygnmi.spec.v080 import gnmi_pb2, gnmi_pb2_grpc

from emulators.runtime import INPUT_KEYS, HostRuntime
from services import gnmi_paths
from services.gnmi_messages import (
    ENCODINGS,
    MAX_PATHS,
    MAX_PENDING,
    MAX_SUBSCRIPTIONS,
    RequestError,
    bounded,
    check_encoding,
    path_of,
    value_of,
)
from services.gnmi_paths import Change, InvalidValue, PathNotFound, Snapshot
from services.gnmi_read import DeviceReader
from services.gnmi_subscribe import Subscriptions

log = structlog.get_logger("gnmi")

GNMI_VERSION = "0.8.0"
SERVICE_NAME = "gnmi.gNMI"
SET_INDEX = 1 << 40  # timeline order of Sets: after every fault (scenario or injected) at the same time
SHARED_SET_INDEX = 1 << 56  # Sets of links between hosts: after the others, by device id then sequence
DEVICE_SHIFT = 32  # SHARED_SET_INDEX + (device id << DEVICE_SHIFT) + the host's sequence


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


class Gnmi(gnmi_pb2_grpc.gNMIServicer):
    """The four RPCs; Subscribe streams are served by services.gnmi_subscribe."""

    def __init__(self, host: Any, management: ManagementState) -> None:
        self.host = host  # services.host.HostState: its runtime appears on Load
        self.management = management
        self.subscriptions = 0  # Subscribe streams open
        self.reader = DeviceReader(host)
        self.telemetry = Subscriptions(self.reader, management.samplers)

    async def Capabilities(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return gnmi_pb2.CapabilityResponse(
            supported_models=[gnmi_pb2.ModelData(name="openconfig-interfaces", organization="OpenConfig working group"),
                              gnmi_pb2.ModelData(name="aicn-testbed", organization="aicn-testbed", version="1")],
            supported_encodings=sorted(ENCODINGS), gNMI_version=GNMI_VERSION)

    async def Get(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            bounded(request, len(request.path), "paths")
            runtime = self.reader.runtime()
            encoding = check_encoding(request.encoding)
            if request.type not in gnmi_pb2.GetRequest.DataType.values():
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"data type {request.type} is unknown")
            target = request.prefix.target
            device = self.reader.device(runtime, target)
            patterns = [path_of(request.prefix, p) for p in request.path] or [path_of(request.prefix, gnmi_pb2.Path())]
            snapshot = Snapshot(device)  # the state of this boundary, though windows may run while it is read
            self.reader.affordable(snapshot, patterns)
            response = gnmi_pb2.GetResponse()
            await self.reader.read(response.notification.add, snapshot, runtime.window_end // 1000, target,
                                   patterns, encoding, request.type)
        except RequestError as e:
            await context.abort(e.code, e.message)
        return response

    async def Set(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            bounded(request, len(request.replace) + len(request.update) + len(request.delete), "updates")
            runtime = self.reader.runtime()
            device = self.reader.device(runtime, request.prefix.target)
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
            async with contextlib.aclosing(self.telemetry.stream(request_iterator, context)) as responses:
                async for response in responses:
                    yield response
        finally:
            self.subscriptions -= 1
