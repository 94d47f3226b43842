"""The job's control plane on one GPU server: failure detection, checkpoints, aborts and restarts.

It runs over the testbed's bus: every GPU server keeps the same replica of the job's state (the
attempt, its checkpoints), updated only by bus messages, so every host sees the same interruption at
the same virtual time. A failure this server detects (a QP error, a scale-up link down for the
job's detect delay, the watchdog) goes on the bus; every server aborts the attempt when it hears it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from emulators.gpu_server.clock import Clock
from emulators.gpu_server.watchdog import Watchdog
from emulators.kernel.port import Port
from emulators.model.job import JobAttempt, JobPlan, iteration_serial
from emulators.olink import spec as olink_spec

Bus = Callable[[int, int, dict[str, Any]], None]  # (at_ps, key, payload): ScenarioContext.post


class JobControl:
    def __init__(self, clock: Clock, name: str, device_id: int, plan: JobPlan, job: JobAttempt,
                 dead_serials: set[int], bus: Bus, ports: Mapping[str, Port], gpus: Collection[int],
                 counters: dict[str, int], stop: Callable[[int], None], resume: Callable[[], None]) -> None:
        self.clock = clock
        self.name = name
        self.device_id = device_id
        self.plan = plan
        self.job = job  # the job's attempt, aborted or not, and its finished ranks
        self.dead_serials = dead_serials  # iteration serials of aborted attempts
        self.bus = bus
        self.ports = ports
        self.gpus = gpus  # the GPUs that run ranks of the job
        self.counters = counters
        self.stop = stop  # every rank and transfer stops; the job goes back to the given iteration
        self.resume = resume  # the ranks start again
        self.bus_seq = 0
        self.watchdog = Watchdog(clock, plan.watchdog_ps, job, self.abort_job)
        self.saved = {rank: (-1, plan.start_ps) for rank in range(len(plan.ranks))}  # rank -> (iteration, when)
        self.saves: dict[int, int] = {}  # iteration -> ranks that saved it (until all have)
        self.checkpoint = (-1, plan.start_ps)  # the last iteration every rank saved, and when the last save ended
        self.checkpoints: list[dict[str, int]] = []
        self.interruptions: list[dict[str, Any]] = []
        self.down_since: dict[str, int] = {}  # scale-up ports whose link is down, since when

    # -- the bus ----------------------------------------------------------------------------------
    def post(self, payload: dict[str, Any]) -> None:
        """Tell every GPU server (this one too), ``detect`` from now."""
        self.bus_seq += 1
        self.bus(self.clock.now + self.plan.detect_ps, (self.device_id << 32) | self.bus_seq, payload)

    def abort_job(self, kind: str, cause: str) -> None:
        """Tell every server that this attempt failed (they abort ``detect`` from now)."""
        self.post({"type": "abort", "attempt": self.job.number, "at_ps": self.clock.now, "device": self.name,
                   "kind": kind, "cause": cause})

    def rank_finished(self, rank: int) -> None:
        """``rank`` ran the job's last iteration: once every rank has, a failure is not the job's."""
        self.post({"type": "finished", "rank": rank, "attempt": self.job.number, "at_ps": self.clock.now})

    def rank_saved(self, rank: int, iteration: int) -> None:
        self.post({"type": "checkpoint", "rank": rank, "iteration": iteration, "attempt": self.job.number,
                   "at_ps": self.clock.now})

    def on_bus(self, payload: dict[str, Any]) -> None:
        if payload["type"] == "checkpoint":
            if self.job.current(payload):
                self._checkpointed(payload)
        elif self.job.hear(payload):
            self._abort(payload)

    def _checkpointed(self, payload: dict[str, Any]) -> None:
        """A rank saved an iteration; once every rank has saved it, the checkpoint exists."""
        iteration = payload["iteration"]
        self.saved[payload["rank"]] = (iteration, payload["at_ps"])
        count = self.saves.get(iteration, 0) + 1
        self.saves[iteration] = count
        if count == len(self.saved):
            del self.saves[iteration]
            self.checkpoints.append({"iteration": iteration, "end_ps": payload["at_ps"]})
            self.checkpoint = (iteration, payload["at_ps"])

    # -- abort and restart ------------------------------------------------------------------------
    def _abort(self, payload: dict[str, Any]) -> None:
        """Every rank stops where it is; with restart on, the job resumes after the restart time from
        the last checkpoint every rank had saved before the failure was known."""
        plan = self.plan
        now = self.clock.now
        self.counters["job_interruptions"] += 1
        restart_iteration, checkpoint_ps = self.checkpoint[0] + 1, self.checkpoint[1]
        resumed = now + plan.restart_ps if plan.restart else None
        self.interruptions.append({
            "at_ps": payload["at_ps"], "device": payload["device"], "kind": payload.get("kind", "failure"),
            "cause": payload["cause"], "aborted_ps": now, "resumed_ps": resumed,
            "restart_iteration": restart_iteration,
            "lost_ps": (resumed - checkpoint_ps) if resumed is not None else None,
        })
        attempt = self.job.number
        self.dead_serials.update(iteration_serial(attempt, i, plan.iterations) for i in range(plan.iterations))
        self.stop(restart_iteration)
        self.watchdog.clear()
        back = resumed if resumed is not None else now  # when the job is back at its checkpoint
        self.saved = {rank: (restart_iteration - 1, back) for rank in self.saved}
        self.saves.clear()
        self.checkpoint = (restart_iteration - 1, back)
        if resumed is not None:
            self.clock.at(resumed, self._restart, None)

    def _restart(self, _: Any) -> None:
        self.job.restart()
        self.resume()
        now = self.clock.now
        for name, since in self.down_since.items():
            link = self.ports[name].link
            if now - since >= self.plan.detect_ps and link is not None:  # still broken: it fails again
                self._scale_up_down((name, link.epoch))  # (a shorter outage has its own check coming)

    # -- failures this server detects -------------------------------------------------------------
    def qp_failed(self, where: str, reason: str) -> None:
        if not self.job.aborted:
            self.abort_job("qp_error", f"qp error on {where}: {reason}")

    def scale_up_link_changed(self, port: Port, up: bool) -> None:
        """A scale-up port's OLink link came up, or went down (then the job hears of it if it stays down)."""
        if up:
            self.down_since.pop(port.name, None)
        elif port.name not in self.down_since:
            now = self.clock.now
            self.down_since[port.name] = now
            assert port.link is not None
            self.clock.at(now + self.plan.detect_ps, self._scale_up_down, (port.name, port.link.epoch))

    def _scale_up_down(self, args: tuple[str, int]) -> None:
        """A scale-up link of a GPU with ranks has been down for the job's detect delay (since the
        link epoch ``args[1]`` began): the driver reports it and the job aborts. Shorter outages are
        retrained and replayed by the link layer, unseen by the job."""
        port, epoch = args
        link = self.ports[port].link
        parsed = olink_spec.parse_port(port)
        if self.job.aborted or parsed is None or link is None or link.up or link.epoch != epoch:
            return
        if parsed[0] not in self.gpus:
            return
        self.abort_job("scale_up_link", f"scale-up link {port} down")

    def results(self) -> dict[str, Any]:
        return {"checkpoints": self.checkpoints, "interruptions": self.interruptions,
                "stopped": self.job.aborted and not self.plan.restart}
