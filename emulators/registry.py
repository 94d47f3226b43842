"""The device kinds the testbed knows: each declares itself in its package's ``kind.py``
(:class:`emulators.kinds.DeviceKind`) and is known here by its import and its entry below, in the
order listings of kinds show."""

from __future__ import annotations

from emulators.ethernet.kind import SWITCH
from emulators.gateway.kind import GATEWAY
from emulators.gpu_server.kind import GPU_SERVER
from emulators.kinds import DeviceKind
from emulators.olink.kind import OLINK
from emulators.otn.kind import OTN
from emulators.tester.kind import TESTER

__all__ = ["DEVICE_KINDS", "DeviceKind"]

DEVICE_KINDS: dict[str, DeviceKind] = {kind.name: kind for kind in (
    TESTER,
    GPU_SERVER,
    GATEWAY,
    OTN,
    OLINK,
    SWITCH,
)}
