"""A small closed-loop controller for a live run: protection switching on a degrading fibre.

It does what an operator's controller would do with real OTN gear, through the same interfaces:
the control service's GetState lists the device hosts and their gNMI addresses; gNMI Gets find
each OTN node's working channels and their APS modules; a STREAM subscription watches the channels'
pre-FEC BER; once a working channel's BER passes the threshold, a gNMI Set forces that node's APS
module to PROTECTION. Each node is its own tail end, so every node on the degraded line switches.

    .venv/bin/testbed run scenarios/wan/ber-controller.yaml --partition site --backend process \\
        --pace 0.01 --control 127.0.0.1:50070 &
    .venv/bin/python scripts/protect_on_ber.py --control 127.0.0.1:50070 --threshold 1e-6

It speaks plain gRPC with the openconfig gnmi.proto stubs (as pygnmi ships them) and the testbed's
control stubs, and exits 0 once every degraded node has switched, 1 if the run ends first.
With TESTBED_TOKEN set it sends the bearer token the hosts and the control service then require.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from typing import Any

import grpc
from pygnmi.spec.v080 import gnmi_pb2, gnmi_pb2_grpc
from testbed.control.v1 import control_pb2, control_pb2_grpc

CHANNELS = "terminal-device/logical-channels/channel[index=*]"
BER = f"{CHANNELS}/otn/state/pre-fec-ber/instant"
MODULES = "aps/aps-modules/aps-module[name=*]/state/active-ports"


def path(text: str) -> Any:
    """A gNMI path from "a/b[k=v]/c"."""
    elems = []
    for part in filter(None, text.split("/")):
        name, _, keys = part.partition("[")
        found = dict(re.findall(r"([^=\[\]]+)=([^\]]*)", "[" + keys)) if keys else {}
        elems.append(gnmi_pb2.PathElem(name=name, key=found))
    return gnmi_pb2.Path(elem=elems)


def key_of(p: Any, elem: str, key: str) -> str:
    return next(e.key[key] for e in p.elem if e.name == elem)


class Node:
    """One OTN node, reached over its host's gNMI."""

    def __init__(self, name: str, address: str, metadata: list[tuple[str, str]]) -> None:
        self.name = name
        self.channel = grpc.insecure_channel(address)
        self.stub = gnmi_pb2_grpc.gNMIStub(self.channel)
        self.metadata = metadata
        self.prefix = gnmi_pb2.Path(target=name)

    def get(self, text: str) -> list[tuple[Any, Any]]:
        reply = self.stub.Get(gnmi_pb2.GetRequest(prefix=self.prefix, path=[path(text)], encoding=gnmi_pb2.JSON),
                              metadata=self.metadata, timeout=10)
        return [(u.path, json.loads(u.val.json_val)) for n in reply.notification for u in n.update]

    def working_channels(self) -> dict[str, str]:
        """channel index -> line port, for the working channels."""
        roles = {key_of(p, "channel", "index"): v for p, v in self.get(f"{CHANNELS}/state/protection-role")}
        ports = {key_of(p, "channel", "index"): v for p, v in self.get(f"{CHANNELS}/state/line-port")}
        return {index: ports[index] for index, role in roles.items() if role == "WORKING"}

    def module_of(self, port: str) -> str:
        for p, active in self.get(MODULES):
            if port in active.split(","):
                return key_of(p, "aps-module", "name")
        raise LookupError(f"{self.name}: no APS module carries {port}")

    def force_protection(self, module: str) -> None:
        update = gnmi_pb2.Update(path=path(f"aps/aps-modules/aps-module[name={module}]/config/force-side"),
                                 val=gnmi_pb2.TypedValue(json_val=json.dumps("PROTECTION").encode()))
        self.stub.Set(gnmi_pb2.SetRequest(prefix=self.prefix, update=[update]), metadata=self.metadata, timeout=10)

    def watch(self, working: dict[str, str], threshold: float, interval_ns: int, log: list[str]) -> None:
        """Stream the channels' BER until the run ends; force the protection switch when one of the
        ``working`` channels passes ``threshold``."""
        request = gnmi_pb2.SubscribeRequest(subscribe=gnmi_pb2.SubscriptionList(
            prefix=self.prefix, mode=gnmi_pb2.SubscriptionList.STREAM, encoding=gnmi_pb2.JSON,
            subscription=[gnmi_pb2.Subscription(path=path(BER), mode=gnmi_pb2.SAMPLE, sample_interval=interval_ns)]))
        stream = self.stub.Subscribe(iter([request]), metadata=self.metadata)
        try:
            for response in stream:
                if not response.HasField("update"):
                    continue
                for u in response.update.update:
                    index = key_of(u.path, "channel", "index")
                    ber = json.loads(u.val.json_val)
                    if index in working and ber > threshold:
                        module = self.module_of(working[index])
                        self.force_protection(module)
                        log.append(f"{self.name}: channel {index} ({working[index]}) pre-FEC BER {ber:g} > "
                                   f"{threshold:g} at {response.update.timestamp / 1e6:.3f} ms (virtual): "
                                   f"forced APS module {module} to PROTECTION")
                        return
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE):
                raise
        finally:
            stream.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--control", required=True, metavar="HOST:PORT", help="the run's control service")
    parser.add_argument("--threshold", type=float, default=1e-6, help="pre-FEC BER that calls for a switch")
    parser.add_argument("--interval-ns", type=int, default=1_000_000, help="sample interval, virtual ns")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the run to start")
    args = parser.parse_args()
    token = os.environ.get("TESTBED_TOKEN")
    metadata = [("authorization", f"Bearer {token}")] if token else []

    with grpc.insecure_channel(args.control) as channel:
        control = control_pb2_grpc.ControlStub(channel)
        deadline = time.monotonic() + args.wait
        state = control.GetState(control_pb2.GetStateRequest(), metadata=metadata, wait_for_ready=True,
                                 timeout=args.wait)
        while not (state.running and state.virtual_ps > 0):  # hosts loaded and a window run
            if time.monotonic() > deadline:
                print(f"error: the run at {args.control} did not start within {args.wait:g} s", file=sys.stderr)
                return 1
            time.sleep(0.05)
            state = control.GetState(control_pb2.GetStateRequest(), metadata=metadata, timeout=10)
        nodes = []
        for host in state.hosts:
            if not host.address:
                print(f"error: host {host.name} serves no gNMI (use the process, docker or k8s backend)",
                      file=sys.stderr)
                return 1
            for device in host.devices:
                probe = Node(device, host.address, metadata)
                if probe.get("system/state/kind")[0][1] == "otn":
                    nodes.append(probe)
        protected = [(node, working) for node in nodes if (working := node.working_channels())]
        if not protected:
            print("error: no OTN node of the run has a protected line", file=sys.stderr)
            return 1
        log: list[str] = []
        threads = [threading.Thread(target=node.watch, args=(working, args.threshold, args.interval_ns, log))
                   for node, working in protected]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for line in log:
            print(line)
    switched = len(log)
    if switched < len(protected):
        print(f"{len(protected) - switched} of {len(protected)} nodes never saw the BER pass {args.threshold:g}",
              file=sys.stderr)
    return 0 if switched == len(protected) else 1


if __name__ == "__main__":
    sys.exit(main())
