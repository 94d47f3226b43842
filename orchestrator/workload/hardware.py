"""What a GPU server's options say about its GPUs and NICs, and how long a compute op takes.

Pure functions of a :class:`~emulators.model.scenario.DeviceSpec` (options already in integer units), shared
by the workload generator, the closed-form estimator and the GPU server device, so all three agree on
a GPU's speed to the picosecond. Defaults come from :mod:`emulators.gpu_server.gpus`.
"""

from __future__ import annotations

from emulators.gpu_server.gpus import DEFAULT_GPUS, GPU_TYPES, GpuHardware, hardware_of
from emulators.gpu_server.gpus import compute_ps as compute_ps  # the one formula, re-exported for the estimator
from emulators.model.scenario import DeviceSpec
from emulators.rdma.host import nic_ports_of as nic_ports_of  # the estimator's, beside the GPU's figures
from emulators.rdma.settings import PACKET_OVERHEAD_BYTES, NicSettings

GPU_SERVER_KIND = "gpu_server"
PS_PER_S = 10**12


def gpus_of(spec: DeviceSpec) -> int:
    """How many GPUs a GPU server has."""
    return int(spec.options.get("gpus", DEFAULT_GPUS))


def gpu_of(spec: DeviceSpec) -> GpuHardware:
    """The GPU of a GPU server (every GPU of a server is alike), as the device itself resolves it."""
    try:
        return hardware_of(spec.options)
    except KeyError:
        raise ValueError(f"server {spec.name!r}: unknown GPU type {spec.options.get('gpu')!r}; known types: "
                         f"{', '.join(GPU_TYPES)}") from None


def effective_flops_per_s(spec: DeviceSpec) -> float:
    """What one GPU of the server achieves: peak x MFU (what non-uniform splits are proportional to)."""
    gpu = gpu_of(spec)
    return gpu.peak_flops_per_s * gpu.mfu


def nic_settings_of(spec: DeviceSpec) -> NicSettings:
    return NicSettings.from_options(dict(spec.options.get("rdma", {})))


def goodput_fraction(spec: DeviceSpec) -> float:
    """Payload over wire bytes of full RoCEv2 packets: mtu / (mtu + headers, preamble and gap)."""
    mtu = nic_settings_of(spec).mtu
    return mtu / (mtu + PACKET_OVERHEAD_BYTES)
