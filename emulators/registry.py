"""The device kinds the testbed knows. Each declares itself in its package's ``kind.py``
(:class:`emulators.kinds.DeviceKind`); a kind is known here by one line naming that declaration, in
the order listings of kinds show."""

from __future__ import annotations

from emulators.kinds import DeviceKind, load_object

__all__ = ["DEVICE_KINDS", "DeviceKind"]

KIND_DECLARATIONS = (  # "module:object" of each kind's declaration (scripts/import_cycles.py sees these)
    "emulators.tester.kind:TESTER",
    "emulators.gpu_server.kind:GPU_SERVER",
    "emulators.gateway.kind:GATEWAY",
    "emulators.otn.kind:OTN",
    "emulators.olink.kind:OLINK",
    "emulators.ethernet.kind:SWITCH",
)


def _declared(where: str) -> DeviceKind:
    kind = load_object(where)
    if not isinstance(kind, DeviceKind):
        raise TypeError(f"{where} is a {type(kind).__name__}, not a DeviceKind")
    return kind


DEVICE_KINDS: dict[str, DeviceKind] = {kind.name: kind for kind in map(_declared, KIND_DECLARATIONS)}
