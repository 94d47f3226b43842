"""Reading a host's devices for gNMI: the device a request targets, the leaves its paths select from
one snapshot, and notifications written from them a few thousand leaves at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from pygnmi.spec.v080 import gnmi_pb2

from emulators.kernel.device import Device
from emulators.runtime import HostRuntime
from services.gnmi_messages import LEAVES_PER_STEP, MAX_LEAVES, RequestError, to_proto_path, typed
from services.gnmi_paths import Leaf, Path, PathNotFound, Snapshot


class DeviceReader:
    """The devices of one host as gNMI reads them, with leaf paths as protobuf built once (most of a
    reply's cost)."""

    def __init__(self, host: Any) -> None:
        self.host = host  # services.host.HostState: its runtime appears on Load
        self._proto_paths: dict[Path, Any] = {}

    def runtime(self) -> HostRuntime:
        runtime: HostRuntime | None = self.host.runtime
        if runtime is None:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"host {self.host.name} has no scenario loaded yet: no device to manage")
        return runtime

    def device(self, runtime: HostRuntime, target: str) -> Device:
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
    def affordable(snapshot: Snapshot, patterns: list[Path]) -> int:
        """The leaves reading ``patterns`` looks at; RESOURCE_EXHAUSTED beyond MAX_LEAVES."""
        leaves = sum(len(snapshot.candidates(p)) for p in patterns)
        if leaves > MAX_LEAVES:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"the {len(patterns)} paths cover {leaves} leaves of {snapshot.device.name}; at most "
                               f"{MAX_LEAVES} are read per request (MAX_LEAVES): ask for fewer or narrower paths")
        return leaves

    @staticmethod
    def selected(snapshot: Snapshot, pattern: Path, data_type: int = gnmi_pb2.GetRequest.ALL) -> list[Leaf]:
        try:
            found = snapshot.select(pattern)
        except PathNotFound as e:
            raise RequestError(grpc.StatusCode.NOT_FOUND, str(e)) from None
        if data_type == gnmi_pb2.GetRequest.CONFIG:
            return [leaf for leaf in found if any(name == "config" for name, _ in leaf[0])]
        if data_type in (gnmi_pb2.GetRequest.STATE, gnmi_pb2.GetRequest.OPERATIONAL):
            return [leaf for leaf in found if all(name != "config" for name, _ in leaf[0])]
        return found

    def write(self, notification: Any, found: list[Leaf], timestamp: int, target: str, encoding: int) -> None:
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

    async def read(self, add: Callable[[], Any], snapshot: Snapshot, timestamp: int, target: str,
                   patterns: list[Path], encoding: int, data_type: int = gnmi_pb2.GetRequest.ALL,
                   skip_missing: bool = False) -> None:
        """Write the leaves of each pattern, all of one snapshot, into a notification from ``add()``,
        letting the event loop run every LEAVES_PER_STEP leaves looked at. NOT_FOUND for a pattern
        that names nothing, unless ``skip_missing``: then it adds none."""
        done = 0
        for pattern in patterns:
            try:
                found = self.selected(snapshot, pattern, data_type)
            except RequestError:
                if skip_missing:
                    continue
                raise
            self.write(add(), found, timestamp, target, encoding)
            done += len(snapshot.candidates(pattern))
            if done >= LEAVES_PER_STEP:
                done = 0
                await asyncio.sleep(0)
