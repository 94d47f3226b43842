"""The device base class: identity, ports, seeded randomness, counters and their time series."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from emulators.kernel.engine import Engine
from emulators.kernel.frame import Frame
from emulators.kernel.port import PORT_COUNTERS, Port
from emulators.kernel.rng import stream_for

DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024


class Device:
    """Base of every emulated device. Subclasses set ``kind`` and override the ``on_*`` hooks.

    ``counters`` holds the device's named integer counters; declare every name in ``__init__`` so
    the sampled time series keeps one column per counter from the first sample on.
    """

    kind = "device"

    def __init__(self, name: str, device_id: int, engine: Engine, seed: int,
                 options: dict[str, Any] | None = None) -> None:
        self.name = name
        self.id = device_id
        self.engine = engine
        self.seed = seed
        self.options = dict(options or {})
        self.rng = stream_for(seed, f"device:{name}")
        self.ports: dict[str, Port] = {}
        self.port_buffer_bytes = int(self.options.get("buffer", DEFAULT_BUFFER_BYTES))
        self.counters: dict[str, int] = {}
        self.series: list[list[int]] = []
        self._schedule = engine.schedule  # bound once: at() is the hottest call there is
        self._seq = 0
        self._planned: set[tuple[int, int]] = set()  # (time, key) of at_planned events

    def at(self, time_ps: int, handler: Callable[[Any], None], arg: Any = None) -> None:
        """Schedule ``handler(arg)`` at ``time_ps``, keyed by this device's own sequence."""
        self._seq += 1
        self._schedule(time_ps, self.id, self._seq, handler, arg)

    def next_seq(self) -> int:
        """The next number of this device's own sequence, for an event another host will schedule (a
        frame that arrives there)."""
        self._seq += 1
        return self._seq

    def at_planned(self, time_ps: int, key: int, handler: Callable[[Any], None], arg: Any = None) -> None:
        """Schedule ``handler(arg)`` at ``time_ps`` ahead of this device's other events at that time,
        ordered by ``key`` (>= 0, unique per device among these). Its place does not depend on when it
        was scheduled, so an action planned from the scenario's timeline at the start and the same
        action planned for a fault injected into the running scenario land alike."""
        if (time_ps, key) in self._planned:
            raise ValueError(f"{self.name}: an event at {time_ps} ps with key {key} is already planned")
        self._planned.add((time_ps, key))
        self.engine.schedule_planned(time_ps, self.id, key, handler, arg)

    @property
    def now(self) -> int:
        return self.engine.now

    def add_port(self, name: str, buffer_bytes: int | None = None) -> Port:
        port = Port(self, name, self.port_buffer_bytes if buffer_bytes is None else buffer_bytes, len(self.ports))
        self.ports[name] = port
        return port

    # -- hooks ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Called once at virtual time 0, before any event: schedule the device's first events."""

    def on_frame(self, port: Port, frame: Frame) -> None:
        """A frame arrived on ``port`` (it may carry corrupted packets: ``frame.corrupt_packets``)."""

    def on_frame_dropped(self, port: Port, frame: Frame) -> None:
        """Our own egress on ``port`` dropped ``frame`` (buffer full or link down)."""

    def on_frame_lost(self, port: Port, frame: Frame) -> None:
        """``frame`` was on the wire toward ``port`` when the link went down."""

    def on_link_change(self, port: Port) -> None:
        """The link on ``port`` changed state or rate."""

    def on_frame_sent(self, port: Port, frame: Frame) -> None:
        """The last bit of ``frame`` left ``port`` (it is on the wire now)."""

    def on_port_idle(self, port: Port) -> None:
        """``port`` has nothing it may send (empty, or only paused priorities): a chance to feed it."""

    def held_frames(self) -> Iterable[Frame]:
        """Frames the device holds outside its port queues (e.g. a switch's reorder buffer)."""
        return ()

    def configure(self, context: Any) -> None:
        """Called once the ports are linked, before ``start``: read what the scenario says about
        this device's surroundings (addresses, routes, flows). The host passes its
        emulators.context.ScenarioContext; the kernel never looks into it, so kinds type it."""

    # -- counters ---------------------------------------------------------------------------------
    def counter_names(self) -> list[str]:
        names = list(self.counters)
        for pname in self.ports:
            names.extend(f"{pname}.{c}" for c in PORT_COUNTERS)
        return names

    def counter_values(self) -> list[int]:
        values = list(self.counters.values())
        for port in self.ports.values():
            values.extend(port.counter_values())
        return values

    def take_sample(self) -> None:
        """Append the counters' values now to ``series`` (the host calls it at each sample time)."""
        self.series.append(self.counter_values())

    def results(self) -> dict[str, Any]:
        """Everything this device measured, as JSON-ready data. Subclasses extend it."""
        return {
            "kind": self.kind,
            "counters": dict(self.counters),
            "ports": {name: port.counters() for name, port in self.ports.items()},
        }
