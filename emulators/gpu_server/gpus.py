"""GPU types: dense BF16 tensor peak (vendor datasheets), a default achievable MFU, and the
default scale-up fabric of a server built from them. Scenarios may override any of these per server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

TERA = 10**12


@dataclass(frozen=True)
class GpuType:
    name: str
    peak_tflops: float  # dense BF16 tensor throughput
    scale_up_bps: int  # per GPU, each direction, inside a server
    scale_up_latency_ps: int
    mfu: float = 0.4  # model FLOPs utilisation a well-tuned training job reaches


NVLINK4_BPS = 3_600_000_000_000  # 18 links x 25 GB/s per direction
NVLINK3_BPS = 2_400_000_000_000  # 12 links x 25 GB/s per direction
PCIE4_X16_BPS = 256_000_000_000  # 32 GB/s per direction: servers without NVLink
NVLINK_LATENCY_PS = 2_000_000
PCIE_LATENCY_PS = 5_000_000

GPU_TYPES: dict[str, GpuType] = {
    g.name: g
    for g in (
        GpuType("h100", 989.4, NVLINK4_BPS, NVLINK_LATENCY_PS),
        GpuType("h800", 989.4, 1_600_000_000_000, NVLINK_LATENCY_PS),  # 8 NVLinks
        GpuType("h20", 148.0, NVLINK4_BPS, NVLINK_LATENCY_PS),
        GpuType("a100", 312.0, NVLINK3_BPS, NVLINK_LATENCY_PS),
        GpuType("a800", 312.0, 1_600_000_000_000, NVLINK_LATENCY_PS),
        GpuType("l40s", 362.05, PCIE4_X16_BPS, PCIE_LATENCY_PS),
        GpuType("l20", 119.5, PCIE4_X16_BPS, PCIE_LATENCY_PS),
    )
}
DEFAULT_GPU = "h100"
DEFAULT_GPUS = 8  # per server



class GpuHardware(NamedTuple):
    """One GPU of a server as its options resolve it."""

    peak_flops_per_s: float  # dense tensor peak
    mfu: float  # the fraction of peak a training job reaches
    scale_up_bps: int  # per GPU, each direction, inside the server
    scale_up_latency_ps: int


def hardware_of(options: dict[str, Any]) -> GpuHardware:
    """A GPU server's GPU: its type's figures, each overridden by the server's options (``tflops``,
    ``mfu``, ``scale_up_bandwidth``, ``scale_up_latency``). KeyError for an unknown type."""
    gpu = GPU_TYPES[options.get("gpu", DEFAULT_GPU)]
    return GpuHardware(
        peak_flops_per_s=float(options.get("tflops", gpu.peak_tflops)) * TERA,
        mfu=float(options.get("mfu", gpu.mfu)),
        scale_up_bps=int(options.get("scale_up_bandwidth", gpu.scale_up_bps)),
        scale_up_latency_ps=int(options.get("scale_up_latency", gpu.scale_up_latency_ps)),
    )


def compute_ps(flops: int, peak_flops_per_s: float, mfu: float) -> int:
    """How long ``flops`` take on a GPU of this peak at this MFU, in whole picoseconds (rounded to
    nearest). The one formula the device, the generator and the estimator all use."""
    return round(flops * 1e12 / (peak_flops_per_s * mfu))
