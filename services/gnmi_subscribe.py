"""gNMI Subscribe on a device host: ONCE, POLL and STREAM subscriptions. A STREAM one is sampled by the
window loop at the boundaries it is due, and its samples queue for a reader that is never waited for."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from functools import partial
from typing import Any

import grpc
import structlog
from pygnmi.spec.v080 import gnmi_pb2

from emulators.kernel.device import Device
from emulators.runtime import HostRuntime
from services.gnmi_messages import MAX_LEAVES, MAX_QUEUED_LEAVES, RequestError, bounded, check_encoding, path_of
from services.gnmi_paths import Path, Snapshot
from services.gnmi_read import DeviceReader

log = structlog.get_logger("gnmi")

DEFAULT_SAMPLE_NS = 1_000_000  # 1 ms of virtual time when a subscription names no interval


def updating(responses: list[Any]) -> Any:
    """A new SubscribeResponse at the end of ``responses``: its notification, to fill."""
    responses.append(gnmi_pb2.SubscribeResponse())
    return responses[-1].update


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


class Subscriptions:
    """The Subscribe streams of a host: each reads its devices through ``reader``; a STREAM one adds its
    sampler to ``samplers``, which the window loop calls at every boundary."""

    def __init__(self, reader: DeviceReader, samplers: set[Callable[[int], None]]) -> None:
        self.reader = reader
        self.samplers = samplers
        self._streams: dict[Callable[[int], None], int] = {}  # STREAM samplers and the leaves each looks at

    async def stream(self, request_iterator: AsyncIterator[Any],
                     context: grpc.aio.ServicerContext) -> AsyncGenerator[Any, None]:
        """One Subscribe stream: the initial state and a sync_response, then samples (STREAM) or a
        state per poll (POLL); INVALID_ARGUMENT, NOT_FOUND or RESOURCE_EXHAUSTED for a bad request."""
        sample = None
        try:
            try:
                first = await anext(aiter(request_iterator), None)
                if first is None or first.WhichOneof("request") != "subscribe":
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                       "the first SubscribeRequest must be a subscribe")
                spec = first.subscribe
                bounded(first, len(spec.subscription), "subscriptions")
                runtime = self.reader.runtime()
                encoding = check_encoding(spec.encoding)
                if spec.mode not in gnmi_pb2.SubscriptionList.Mode.values():
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"subscription list mode {spec.mode} is unknown")
                target = spec.prefix.target
                device = self.reader.device(runtime, target)
                subs = [(path_of(spec.prefix, s.path), s) for s in spec.subscription] or \
                    [(path_of(spec.prefix, gnmi_pb2.Path()), gnmi_pb2.Subscription())]
                patterns = [p for p, _ in subs]
                snapshot = Snapshot(device)
                leaves = self.reader.affordable(snapshot, patterns)
                timestamp = runtime.window_end // 1000
                if spec.mode == gnmi_pb2.SubscriptionList.STREAM:
                    sampled = sum(n for f, n in self._streams.items() if f in self.samplers)
                    if sampled + leaves > MAX_LEAVES:
                        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, (
                            f"the STREAM subscriptions of host {self.reader.host.name} sample {sampled} leaves "
                            f"already; this one would add {leaves}, past {MAX_LEAVES} (MAX_LEAVES): subscribe to "
                            f"fewer or narrower paths"))
                    # registered at the snapshot: no window boundary after the initial state is missed
                    subscriber = Subscriber(context)
                    sample = self._sampler(runtime, target, device, subs, encoding, timestamp, subscriber)
                    self._streams[sample] = leaves
                    self.samplers.add(sample)
                initial: list[Any] = []
                await self.reader.read(partial(updating, initial), snapshot, timestamp, target, patterns, encoding)
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
                    await self.reader.read(partial(updating, polled), Snapshot(device),
                                           runtime.window_end // 1000, target, patterns, encoding, skip_missing=True)
                    for response in polled:
                        yield response
                    yield gnmi_pb2.SubscribeResponse(sync_response=True)
        finally:
            if sample is not None:
                self.samplers.discard(sample)
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
                        found = self.reader.selected(snapshot, pattern)
                    except RequestError:
                        continue  # a path that named something at subscription time may not now
                    response = gnmi_pb2.SubscribeResponse()
                    self.reader.write(response.update, found, now_ns, target, encoding)
                    if not subscriber.put(response):
                        self.samplers.discard(sample)
                        return

        return sample
