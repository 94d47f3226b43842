"""A device host process on loopback, loaded with a whole scenario, whose windows the test drives
(the coordinator's Sync stream, one Advance at a time), so gNMI clients act between windows."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
from typing import Any

import grpc
from testbed.sync.v1 import sync_pb2, sync_pb2_grpc

from emulators.model.scenario import scenario_to_dict
from orchestrator.scenario.loader import parse_scenario

HOST = "h"


class DrivenHost:
    def __init__(self, scenario_text: str, token: str | None = None) -> None:
        env = dict(os.environ)
        env.pop("TESTBED_TOKEN", None)
        if token is not None:
            env["TESTBED_TOKEN"] = token
        self.proc = subprocess.Popen([sys.executable, "-m", "services.host", "--name", HOST, "--log-level", "warning"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("LISTENING "), self.proc.stderr.read() if self.proc.stderr else line
        self.address = line.split()[1]
        self.port = int(self.address.rsplit(":", 1)[1])
        self.channel = grpc.insecure_channel(self.address)
        self.control = sync_pb2_grpc.HostControlStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []  # HostControl asks for it too
        scenario = parse_scenario(scenario_text, "<test>")
        self.control.Load(sync_pb2.LoadRequest(
            run_id="gnmi-test", host=HOST, scenario_json=json.dumps(scenario_to_dict(scenario)),
            assignment={d.name: HOST for d in scenario.devices}), metadata=self.metadata, timeout=10)
        self._requests: queue.Queue[Any] = queue.Queue()
        self._reports = self.control.Sync(iter(self._requests.get, None), metadata=self.metadata)
        self.window = 0
        self.end_ps = 0

    def _send(self, advance: Any) -> Any:
        self._requests.put(advance)
        return next(self._reports)

    def start(self) -> Any:
        return self._send(sync_pb2.Advance(start=True))

    def advance(self, end_ps: int) -> Any:
        self.window += 1
        self.end_ps = end_ps
        return self._send(sync_pb2.Advance(window=self.window, end_ps=end_ps))

    def run_to(self, end_ps: int, step_ps: int) -> None:
        while self.end_ps < end_ps:
            self.advance(min(end_ps, self.end_ps + step_ps))

    def results(self) -> dict[str, Any]:
        reply = self.control.Results(sync_pb2.ResultsRequest(), metadata=self.metadata, timeout=10)
        return json.loads(reply.results_json)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> int:
        """The host process's resident memory, MiB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) // 1024

    def close(self) -> None:
        self._requests.put(None)
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
