"""A switch's OpenConfig paths: PFC, ECN and its shared buffer under ``/qos``; PFC and ECN are
writable. Gateways and OTN nodes have them too (they forward as a switch does)."""

from __future__ import annotations

from collections.abc import Callable, Set
from typing import Any, TypeVar

from emulators.ethernet.mmu import EcnMarker
from emulators.ethernet.switch import Switch
from emulators.openconfig import (
    Change,
    DevicePaths,
    InvalidValue,
    Leaf,
    Path,
    PathNotFound,
    bool_value,
    elem,
    fraction_value,
    render,
    uint_value,
)

S = TypeVar("S", bound=Switch)

ECN_LEAVES = ("enabled", "kmin-bytes", "kmax-bytes", "pmax")


class SwitchPaths(DevicePaths[S]):
    writable = ("/qos/pfc/config/enabled", *(f"/qos/ecn/config/{leaf}" for leaf in ECN_LEAVES))

    def leaves(self, device: S) -> list[Leaf]:
        return _qos(device)

    def plan(self, device: S, path: Path, value: Any, local_links: Set[str],
             staged: dict[str, Any]) -> list[Change] | None:
        text = render(path)
        names = tuple(name for name, _ in path)
        if names[:3] == ("qos", "ecn", "config") and len(path) == 4:
            leaf = names[3]
            if leaf in ("kmin-bytes", "kmax-bytes"):
                staged[leaf] = uint_value(text, value, 0, 1 << 40)
            elif leaf == "enabled":
                staged[leaf] = bool_value(text, value)
            elif leaf == "pmax":
                staged[leaf] = fraction_value(text, value)
            else:
                raise PathNotFound(f"{device.name} has no writable leaf {text}")
            return []  # the thresholds change together, once every update is read (finish)
        if names == ("qos", "pfc", "config", "enabled"):
            return [Change(device.name, text, bool_value(text, value), _pfc_setter(device, value))]
        return None

    def finish(self, device: S, staged: dict[str, Any]) -> list[Change]:
        return [_ecn_change(device, staged)] if staged else []


PATHS: SwitchPaths[Switch] = SwitchPaths()


def _qos(switch: Switch) -> list[Leaf]:
    pfc = (elem("qos"), elem("pfc"))
    ecn = (elem("qos"), elem("ecn"))
    buf = (elem("qos"), elem("buffer"), elem("state"))
    mmu = getattr(switch, "mmu", None)
    return [
        ((*pfc, elem("config"), elem("enabled")), switch.pfc),
        ((*pfc, elem("state"), elem("lossless-priorities")), ",".join(str(p) for p in sorted(switch.lossless))),
        ((*pfc, elem("state"), elem("xoff-bytes")), switch.pfc_xoff),
        ((*pfc, elem("state"), elem("xon-bytes")), switch.pfc_xon),
        ((*pfc, elem("state"), elem("xoff-sent")), switch.counters["pfc_xoff_sent"]),
        ((*pfc, elem("state"), elem("xon-sent")), switch.counters["pfc_xon_sent"]),
        ((*pfc, elem("state"), elem("pause-received")), switch.counters["pfc_pause_received"]),
        ((*ecn, elem("config"), elem("enabled")), switch.ecn_marker is not None),
        ((*ecn, elem("config"), elem("kmin-bytes")), switch.ecn_kmin),
        ((*ecn, elem("config"), elem("kmax-bytes")), switch.ecn_kmax),
        ((*ecn, elem("config"), elem("pmax")), switch.ecn_pmax),
        ((*ecn, elem("state"), elem("marked-frames")), switch.counters["ecn_marked_frames"]),
        ((*buf, elem("size-bytes")), switch.buffer_size),
        ((*buf, elem("used-bytes")), mmu.used if mmu is not None else 0),
        ((*buf, elem("peak-bytes")), switch.counters["buffer_peak_bytes"]),
    ]


def _pfc_setter(switch: Switch, enabled: bool) -> Callable[[], None]:
    lossless = frozenset(int(p) for p in switch.setting["lossless_priorities"]) if enabled else frozenset()

    def apply() -> None:
        # pauses already sent are released as the queues drain (release() does not look at lossless)
        switch.pfc = enabled
        switch.lossless = lossless
        mmu = getattr(switch, "mmu", None)
        if mmu is not None:
            mmu.lossless = lossless

    return apply


def _ecn_change(switch: Switch, ecn: dict[str, Any]) -> Change:
    kmin = ecn.get("kmin-bytes", switch.ecn_kmin)
    kmax = ecn.get("kmax-bytes", switch.ecn_kmax)
    pmax = ecn.get("pmax", switch.ecn_pmax)
    enabled = ecn.get("enabled", switch.ecn_marker is not None)
    if kmin >= kmax:
        raise InvalidValue(f"ECN kmin-bytes ({kmin}) must be below kmax-bytes ({kmax}) on {switch.name}")

    def apply() -> None:
        switch.ecn_kmin, switch.ecn_kmax, switch.ecn_pmax, switch.ecn = kmin, kmax, pmax, enabled
        marker = switch.ecn_marker
        if not enabled:
            switch.ecn_marker = None
        elif marker is None:
            switch.ecn_marker = EcnMarker(kmin, kmax, pmax, switch.rng)
        else:
            marker.kmin, marker.kmax, marker.pmax = kmin, kmax, pmax

    return Change(switch.name, "/qos/ecn/config", {"enabled": enabled, "kmin-bytes": kmin, "kmax-bytes": kmax,
                                                   "pmax": pmax}, apply)
