"""A GPU server's OpenConfig paths: its OLink scale-up ports, its NICs, and its GPUs' compute time."""

from __future__ import annotations

from emulators.gpu_server.device import GpuServer
from emulators.olink.openconfig import port_leaves
from emulators.openconfig import DevicePaths, Leaf, elem
from emulators.rdma.openconfig import nic_leaves


class GpuServerPaths(DevicePaths[GpuServer]):
    def leaves(self, device: GpuServer) -> list[Leaf]:
        out = port_leaves(device.olink.ports)
        for nic in device.nics:
            out += nic_leaves(nic)
        # the counter charges a compute op when it starts; busy time runs with the clock
        gpu = (elem("gpus"), elem("state"))
        out += [((*gpu, elem("count")), device.gpus), ((*gpu, elem("compute-ps")), device.counters["gpu_compute_ps"])]
        now = device.engine.now
        for index, ps in device.gpu_busy_ps().items():
            one = (elem("gpus"), elem("gpu", id=str(index)), elem("state"))
            out += [((*one, elem("busy-ps")), ps), ((*one, elem("utilization")), 100.0 * ps / now if now else 0.0)]
        return out


PATHS = GpuServerPaths()
