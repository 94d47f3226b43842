"""A leaf switch as the GSE half it hosts sees it (emulators.ethernet.switch.Switch): the switch
does routing, buffering and egress; emulators.ethernet.gse schedules what crosses the fabric."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from emulators.ethernet.mmu import SharedBuffer
    from emulators.kernel.frame import Frame
    from emulators.kernel.port import Port


class LeafSwitch(Protocol):
    id: int
    name: str
    counters: dict[str, int]
    ports: dict[str, Port]
    port_index: dict[str, int]  # port name -> its index among the switch's ports
    nic_facing: list[bool]  # per port index: whether a NIC is at the far end
    routes: dict[int, tuple[Port, ...]]  # destination address -> its ECMP next hops
    mmu: SharedBuffer

    @property
    def now(self) -> int: ...

    def at(self, time_ps: int, handler: Callable[[Any], None], arg: Any = None) -> None: ...

    def admit(self, frame: Frame, in_port: int, egress: Port) -> bool:
        """Charge ``frame`` to the shared buffer toward ``egress``; False if it does not fit."""
        ...

    def after_pipeline(self, handler: Callable[[Frame], None], frame: Frame) -> None:
        """``handler(frame)`` once the frame has crossed the switch's forwarding latency."""
        ...

    def enqueue(self, port: Port, frame: Frame) -> None: ...

    def send_control(self, frame: Frame) -> None:
        """Our own signalling (request/grant), routed like any control frame."""
        ...
