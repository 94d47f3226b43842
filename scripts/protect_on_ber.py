"""A small closed-loop controller for a live run: protection switching on a degrading fibre.

It does what an operator's controller would do with real OTN gear, through the same interfaces:
the control service's GetState lists the device hosts and their gNMI addresses; gNMI Gets find
each OTN node's working channels and the APS module each belongs to; a STREAM subscription per node
watches the channels' pre-FEC BER; once a working channel's BER passes the threshold, a gNMI Set
forces its APS module to PROTECTION. Each node is its own tail end, so every node on a degraded
line switches its own modules.

    .venv/bin/testbed run scenarios/wan/ber-controller.yaml --partition site --backend process \\
        --pace 0.01 --control 127.0.0.1:50070 &
    .venv/bin/python scripts/protect_on_ber.py --control 127.0.0.1:50070 --threshold 1e-6

It speaks plain gRPC with the openconfig gnmi.proto stubs (as pygnmi ships them) and the testbed's
control stubs. It runs until every protected module has switched or the run is over, prints each
switch, and exits 0 if it switched at least one module and met no error, 1 otherwise. A Set the
host receives too late for the run (after its last window began) is dropped there: the run's
results say what took effect. With TESTBED_TOKEN set it sends the bearer token the hosts and the
control service then require.
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

    def __init__(self, name: str, stub: Any, metadata: list[tuple[str, str]]) -> None:
        self.name = name
        self.stub = stub
        self.metadata = metadata
        self.prefix = gnmi_pb2.Path(target=name)
        self.stream: Any = None

    def get(self, text: str) -> list[tuple[Any, Any]]:
        reply = self.stub.Get(gnmi_pb2.GetRequest(prefix=self.prefix, path=[path(text)], encoding=gnmi_pb2.JSON),
                              metadata=self.metadata, timeout=10)
        return [(u.path, json.loads(u.val.json_val)) for n in reply.notification for u in n.update]

    def protected_channels(self) -> dict[str, tuple[str, str]]:
        """channel index -> (line port, APS module) for the working channels that carry traffic now."""
        by_index: dict[str, dict[str, Any]] = {}
        for leaf in ("protection-role", "line-port", "carrying-traffic"):
            for p, value in self.get(f"{CHANNELS}/state/{leaf}"):
                by_index.setdefault(key_of(p, "channel", "index"), {})[leaf] = value
        module_of = {port: key_of(p, "aps-module", "name") for p, active in self.get(MODULES)
                     for port in active.split(",")}
        return {index: (c["line-port"], module_of[c["line-port"]]) for index, c in by_index.items()
                if c["protection-role"] == "WORKING" and c["carrying-traffic"] and c["line-port"] in module_of}

    def force_protection(self, module: str) -> None:
        update = gnmi_pb2.Update(path=path(f"aps/aps-modules/aps-module[name={module}]/config/force-side"),
                                 val=gnmi_pb2.TypedValue(json_val=json.dumps("PROTECTION").encode()))
        self.stub.Set(gnmi_pb2.SetRequest(prefix=self.prefix, update=[update]), metadata=self.metadata, timeout=10)

    def watch(self, channels: dict[str, tuple[str, str]], threshold: float, interval_ns: int,
              log: list[str], errors: list[str]) -> None:
        """Stream the channels' BER until every module of ``channels`` has switched or the stream
        ends; force a module to PROTECTION when its working channel passes ``threshold``."""
        waiting = set(channels)
        request = gnmi_pb2.SubscribeRequest(subscribe=gnmi_pb2.SubscriptionList(
            prefix=self.prefix, mode=gnmi_pb2.SubscriptionList.STREAM, encoding=gnmi_pb2.JSON,
            subscription=[gnmi_pb2.Subscription(path=path(BER), mode=gnmi_pb2.SAMPLE, sample_interval=interval_ns)]))
        try:
            self.stream = self.stub.Subscribe(iter([request]), metadata=self.metadata)
            for response in self.stream:
                if not response.HasField("update"):
                    continue
                for u in response.update.update:
                    index = key_of(u.path, "channel", "index")
                    ber = json.loads(u.val.json_val)
                    if index not in waiting or ber <= threshold:
                        continue
                    port, module = channels[index]
                    self.force_protection(module)
                    waiting.discard(index)
                    for other, (_, same) in channels.items():  # the module's other channels go with it
                        if same == module:
                            waiting.discard(other)
                    log.append(f"{self.name}: channel {index} ({port}) pre-FEC BER {ber:g} > {threshold:g} at "
                               f"{response.update.timestamp / 1e6:.3f} ms (virtual): forced APS module {module} "
                               f"to PROTECTION")
                if not waiting:
                    return
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE):
                errors.append(f"{self.name}: {e.code().name}: {e.details()}")
        except Exception as e:  # a controller bug: say so, never claim success
            errors.append(f"{self.name}: {e!r}")
        finally:
            if self.stream is not None:
                self.stream.cancel()


def running(control: Any, metadata: list[tuple[str, str]]) -> bool:
    try:
        return bool(control.GetState(control_pb2.GetStateRequest(), metadata=metadata, timeout=10).running)
    except grpc.RpcError:
        return False  # the control service goes with the run


def control_loop(args: argparse.Namespace, metadata: list[tuple[str, str]]) -> int:
    channels: dict[str, Any] = {}
    try:
        with grpc.insecure_channel(args.control) as channel:
            control = control_pb2_grpc.ControlStub(channel)
            deadline = time.monotonic() + args.wait
            state = control.GetState(control_pb2.GetStateRequest(), metadata=metadata, wait_for_ready=True,
                                     timeout=args.wait)
            while not (state.running and state.virtual_ps > 0):  # hosts loaded and a window run
                if time.monotonic() > deadline:
                    print(f"error: no run under way at {args.control} within {args.wait:g} s", file=sys.stderr)
                    return 1
                time.sleep(0.05)
                state = control.GetState(control_pb2.GetStateRequest(), metadata=metadata, timeout=10)
            nodes = []
            for host in state.hosts:
                if not host.address:
                    print(f"error: host {host.name} serves no gNMI (use the process, docker or k8s backend)",
                          file=sys.stderr)
                    return 1
                if host.address not in channels:
                    channels[host.address] = grpc.insecure_channel(host.address)
                stub = gnmi_pb2_grpc.gNMIStub(channels[host.address])
                for device in host.devices:
                    node = Node(device, stub, metadata)
                    if node.get("system/state/kind")[0][1] == "otn":
                        nodes.append(node)
            protected = [(node, chans) for node in nodes if (chans := node.protected_channels())]
            modules = sum(len({module for _, module in chans.values()}) for _, chans in protected)
            if not protected:
                print("error: no OTN node of the run has a protected line in service", file=sys.stderr)
                return 1
            log: list[str] = []
            errors: list[str] = []
            threads = [threading.Thread(target=node.watch, args=(chans, args.threshold, args.interval_ns, log, errors),
                                        daemon=True) for node, chans in protected]
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):  # until all switched, or the run is over
                for thread in threads:
                    thread.join(timeout=0.2)
                if any(t.is_alive() for t in threads) and not running(control, metadata):
                    for node, _ in protected:
                        if node.stream is not None:
                            node.stream.cancel()
                    for thread in threads:
                        thread.join(timeout=5)
                    break
    except grpc.RpcError as e:
        print(f"error: {args.control}: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    finally:
        for channel in channels.values():
            channel.close()
    for line in log:
        print(line)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    print(f"{len(log)} of {modules} protected modules switched", file=sys.stderr)
    return 0 if log and not errors else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--control", required=True, metavar="HOST:PORT", help="the run's control service")
    parser.add_argument("--threshold", type=float, default=1e-6, help="pre-FEC BER that calls for a switch")
    parser.add_argument("--interval-ns", type=int, default=1_000_000, help="sample interval, virtual ns")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the run to start")
    args = parser.parse_args()
    token = os.environ.get("TESTBED_TOKEN")
    return control_loop(args, [("authorization", f"Bearer {token}")] if token else [])


if __name__ == "__main__":
    sys.exit(main())
