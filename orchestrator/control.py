"""The control service of a live run: faults injected at a virtual time, and the run's progress.

A fault is written like an entry of the scenario's ``faults:`` list. It is resolved by the scenario
loader itself, on the scenario file with the faults injected so far appended: the same checks, the
same expansion (a WAN cut, a fabric plane, a device failure), the same place in the fault timeline
as if the file had listed it. The coordinator then hands it to every host with the next window.
Each injected fault is recorded with the virtual time it took effect (:meth:`FaultInputs.record`),
so ``testbed replay`` can run the scenario again with those faults in its timeline. A request that
is too large, not protobuf, or whose JSON is too deep, too long a number or not finite answers
INVALID_ARGUMENT.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import structlog
import yaml
from testbed.control.v1 import control_pb2, control_pb2_grpc

from emulators.model.faults import LinkChange
from emulators.model.scenario import Scenario, propagation_ps
from emulators.runtime import HostRuntime
from orchestrator.control_error import ControlError
from orchestrator.coordinator import Coordinator
from orchestrator.partition import Plan
from orchestrator.scenario.loader import ScenarioError, parse_scenario
from services.client_input import clipped, read_json  # what the management services share
from services.host import TOKEN_ENV  # one token for the hosts' gNMI and this service
from services.interceptors import TokenInterceptor, UndecodableRequests

log = structlog.get_logger("control")

MAX_FAULT_BYTES = 64 << 10  # a fault is a line of JSON; a scenario's largest entry is a few hundred bytes
MAX_MESSAGE_BYTES = 16 << 20  # what gRPC itself receives: above MAX_FAULT_BYTES, so a large fault hears why


class InputError(ValueError):
    """A fault the control service cannot take, with the gRPC status that says why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class FaultInputs:
    """The faults injected into a run of one scenario file, resolved by the scenario loader."""

    def __init__(self, scenario: Scenario, plan: Plan) -> None:
        self.scenario = scenario
        self.plan = plan
        self.written: list[dict[str, Any]] = []  # as injected, each with its effective "at" in ps
        self.specs: list[LinkChange] = list(scenario.faults)
        try:
            self.document = yaml.safe_load(Path(scenario.source).read_text())
        except (OSError, yaml.YAMLError):
            self.document = None  # a scenario built in code: nothing to resolve faults against

    def resolve(self, fault: Any, now_ps: int) -> tuple[dict[str, Any], list[LinkChange]]:
        """The entry as it will be recorded, and the fault timeline entries ``fault`` (a scenario
        ``faults:`` entry) adds, due at or after ``now_ps`` (its "at" defaults to ``now_ps``).
        Nothing is kept until :meth:`accept`."""
        if self.document is None:
            raise InputError(grpc.StatusCode.FAILED_PRECONDITION,
                             f"{self.scenario.source} is not a scenario file: faults can only be injected into "
                             f"runs of scenario files")
        if not isinstance(fault, dict):
            raise InputError(grpc.StatusCode.INVALID_ARGUMENT,
                             "a fault is a JSON object like a scenario's faults: entry, e.g. "
                             '{"link": "l1", "state": "down", "at": "5ms"}')
        entry = dict(fault)
        entry.setdefault("at", f"{now_ps}ps")
        document = copy.deepcopy(self.document)
        faults = document.get("faults") or []
        document["faults"] = [*faults, *self.written, entry]
        try:
            resolved = parse_scenario(yaml.safe_dump(document, sort_keys=False), self.scenario.source,
                                      self.scenario.seed)
        except ScenarioError as e:
            raise InputError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        except RecursionError:
            raise InputError(grpc.StatusCode.INVALID_ARGUMENT, "the fault is nested too deeply") from None
        known = len(self.specs)
        if list(resolved.faults[:known]) != self.specs:
            raise InputError(grpc.StatusCode.FAILED_PRECONDITION,
                             "this fault would reorder the scenario's fault timeline; put it in the scenario file")
        added = list(resolved.faults[known:])
        late = [f for f in added if f.at_ps < now_ps]
        if late:
            raise InputError(grpc.StatusCode.FAILED_PRECONDITION,
                             f"the fault is due at {late[0].at_ps} ps, but the run has reached {now_ps} ps")
        beyond = [f for f in added if f.at_ps >= self.scenario.duration_ps]
        if beyond:
            raise InputError(grpc.StatusCode.FAILED_PRECONDITION,
                             f"the fault is due at {beyond[0].at_ps} ps, at or after the run's end "
                             f"({self.scenario.duration_ps} ps)")
        links = {link.name: link for link in self.scenario.links}
        lookahead = self.plan.lookahead_ps
        for f in added:  # the partition's lookahead rests on the propagation of the links it cuts
            length_mm = f.length_after_mm()
            cut = length_mm is not None and f.link in self.plan.cut_links and lookahead is not None
            if cut and propagation_ps(length_mm or 0, links[f.link].delay_ps_per_m) < (lookahead or 0):
                raise InputError(grpc.StatusCode.FAILED_PRECONDITION, (
                    f"link {f.link} joins two hosts of this partition, whose windows are {lookahead} ps long: it "
                    f"cannot get shorter than that in a live run; put the change in the scenario file"))
        return entry, added

    def accept(self, entry: dict[str, Any], added: list[LinkChange]) -> None:
        """Record a resolved fault that the run has taken."""
        self.written.append(entry)
        self.specs.extend(added)

    def record(self) -> dict[str, Any]:
        """What inputs.json holds: enough to run the scenario again with these faults in its timeline."""
        return {"scenario": self.scenario.source, "seed": self.scenario.seed, "faults": self.written,
                "timeline": [f.to_dict() for f in self.specs[len(self.scenario.faults):]]}


def schedule_sets(sets: list[dict[str, Any]]) -> Callable[[HostRuntime], None]:
    """Put recorded gNMI Sets back on a host's timeline, each at the virtual time it took effect with
    the order it had there (services.gnmi does the same live). A link's rate changes on every host
    that has a side of the link, whichever host the Set went to."""
    from services import gnmi_paths  # the services layer: gNMI's own checks and setters
    from services.gnmi import SET_INDEX

    def prepare(runtime: HostRuntime) -> None:
        local = runtime.local_links
        for k, recorded in enumerate(sets):
            at_ps, index = recorded["at_ps"], recorded.get("index", SET_INDEX + k)  # (older records: in order)
            if "link" in recorded:
                runtime.add_link_rate(at_ps, index, recorded["link"], recorded["rate_bps"])
                continue
            device = runtime.devices.get(recorded["device"])
            if device is None:
                continue
            updates = gnmi_paths.expand(gnmi_paths.parse(recorded["path"]), recorded["value"])
            for change in gnmi_paths.plan_set(device, updates, local):
                runtime.engine.add_change(at_ps, index, change.apply)

    return prepare


def replay_scenario(inputs: dict[str, Any]) -> Scenario:
    """The scenario of a recorded run with its injected faults written into the timeline. ValueError
    when they no longer resolve to the recorded timeline (the scenario file changed since)."""
    source = inputs["scenario"]
    document = yaml.safe_load(Path(source).read_text())
    written = document.get("faults") or []
    document["faults"] = [*written, *inputs.get("faults", [])]
    scenario = parse_scenario(yaml.safe_dump(document, sort_keys=False), source, inputs["seed"])
    recorded = inputs.get("timeline", [])
    if recorded and [f.to_dict() for f in scenario.faults[-len(recorded):]] != recorded:
        raise ValueError(f"{source}: the recorded faults no longer resolve to the recorded timeline; has the "
                         f"scenario file changed since the run?")
    return scenario


class ControlService(control_pb2_grpc.ControlServicer):
    def __init__(self, coordinator: Coordinator, inputs: FaultInputs) -> None:
        self.coordinator = coordinator
        self.inputs = inputs

    async def InjectFault(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        size = len(request.fault_json.encode())
        if size > MAX_FAULT_BYTES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"fault_json is {size} bytes; at most {MAX_FAULT_BYTES} are taken (MAX_FAULT_BYTES)")
        try:
            fault = read_json(request.fault_json, "fault_json")
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, clipped(str(e)))
        coordinator = self.coordinator
        if not coordinator.running:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the run has not started or is over")
        try:
            entry, added = self.inputs.resolve(fault, coordinator.end_ps)
            coordinator.inject(added)
        except InputError as e:
            await context.abort(e.code, clipped(str(e)))
        except ValueError as e:  # the run moved on while the fault was resolved
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, clipped(str(e)))
        self.inputs.accept(entry, added)
        log.info("fault injected", faults=[f.to_dict() for f in added])
        return control_pb2.InjectFaultResponse(faults=[
            control_pb2.AppliedFault(at_ps=f.at_ps, index=f.index, link=f.link, change=_change(f)) for f in added])

    async def GetState(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        c = self.coordinator
        hosts = [control_pb2.Host(name=h.name, address=getattr(h, "address", ""), devices=c.plan.hosts[h.name])
                 for h in c.hosts]
        return control_pb2.RunState(scenario=c.scenario.name, running=c.running, virtual_ps=c.end_ps,
                                    duration_ps=c.scenario.duration_ps, windows=c.windows, pace=c.pace or 0.0,
                                    injected=len(c.injected), hosts=hosts)


def _change(fault: LinkChange) -> str:
    return f"{fault.field}={fault.value}"


async def serve_control(coordinator: Coordinator, inputs: FaultInputs, address: str) -> grpc.aio.Server:
    """Start the control service on ``address`` (host:port) beside the coordinator."""
    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ControlError(f"{address!r} is not a host:port; give one such as 127.0.0.1:50070")
    # with TESTBED_TOKEN (as for the hosts), every call needs it; the token first, then the request's bytes
    tokens = {control_pb2.DESCRIPTOR.services_by_name["Control"].full_name: os.environ.get(TOKEN_ENV) or None}
    server = grpc.aio.server(interceptors=[TokenInterceptor("the control service", tokens), UndecodableRequests()],
                             options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
    control_pb2_grpc.add_ControlServicer_to_server(ControlService(coordinator, inputs), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise ControlError(f"the control service cannot listen on {address}; give a free host:port, e.g. "
                           f"127.0.0.1:50070")
    await server.start()
    log.info("control service listening", address=address)
    return server
