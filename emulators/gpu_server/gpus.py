"""GPU types: dense BF16 tensor peak (vendor datasheets), the MFU a training job reaches on them
(with its published source, or marked as assumed), and the default scale-up fabric of a server built
from them. Scenarios may override any of these per server (:data:`GPU_OPTIONS`).

The published MFUs are whole-job figures (model FLOPs over peak, communication and pipeline bubbles
included); the testbed applies ``mfu`` to compute ops alone and emulates the rest, so a run's
``mfu_effective`` comes out below the table's figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

TERA = 10**12

# The options of a GPU server that say what its GPUs are; the rest (gpus, NICs, buffers) say how many
# and how they are wired.
GPU_OPTIONS = ("gpu", "tflops", "mfu", "scale_up_bandwidth", "scale_up_latency")

SCENARIO_MFU = "scenario"  # mfu_source of a server whose own mfu option sets it
ASSUMED_MFU = 0.4
ASSUMED_MFU_SOURCE = "no published figure: assumed; set `mfu` in the scenario"
LLAMA3_H100 = ('Meta, "The Llama 3 Herd of Models" (2024), Table 4: 430 TFLOP/s per H100 in BF16 on 8,192 GPUs '
               '(43 % of 989)')
OPT_A100 = ('Zhang et al., "OPT: Open Pre-trained Transformer Language Models" (2022): 147 TFLOP/s per 80 GB A100 '
            '(47 % of 312)')


@dataclass(frozen=True)
class GpuType:
    name: str
    peak_tflops: float  # dense BF16 tensor throughput
    scale_up_bps: int  # per GPU, each direction, inside a server
    scale_up_latency_ps: int
    mfu: float  # model FLOPs utilisation a well-tuned training job reaches
    mfu_source: str  # where that figure was published, or ASSUMED_MFU_SOURCE


NVLINK4_BPS = 3_600_000_000_000  # 18 links x 25 GB/s per direction
NVLINK3_BPS = 2_400_000_000_000  # 12 links x 25 GB/s per direction
PCIE4_X16_BPS = 256_000_000_000  # 32 GB/s per direction: servers without NVLink
NVLINK_LATENCY_PS = 2_000_000
PCIE_LATENCY_PS = 5_000_000

GPU_TYPES: dict[str, GpuType] = {
    g.name: g
    for g in (
        GpuType("h100", 989.4, NVLINK4_BPS, NVLINK_LATENCY_PS, 0.43, LLAMA3_H100),
        # the H800 is an H100 with 8 NVLinks: the same Hopper compute, so the H100's figure
        GpuType("h800", 989.4, 1_600_000_000_000, NVLINK_LATENCY_PS, 0.43, LLAMA3_H100 + "; the H800 has its compute"),
        GpuType("h20", 148.0, NVLINK4_BPS, NVLINK_LATENCY_PS, ASSUMED_MFU, ASSUMED_MFU_SOURCE),
        GpuType("a100", 312.0, NVLINK3_BPS, NVLINK_LATENCY_PS, 0.47, OPT_A100),
        # the A800 is an A100 with 8 NVLinks: the same Ampere compute, so the A100's figure
        GpuType("a800", 312.0, 1_600_000_000_000, NVLINK_LATENCY_PS, 0.47, OPT_A100 + "; the A800 has its compute"),
        GpuType("l40s", 362.05, PCIE4_X16_BPS, PCIE_LATENCY_PS, ASSUMED_MFU, ASSUMED_MFU_SOURCE),
        GpuType("l20", 119.5, PCIE4_X16_BPS, PCIE_LATENCY_PS, ASSUMED_MFU, ASSUMED_MFU_SOURCE),
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


def mfu_source(options: dict[str, Any]) -> str:
    """Where a GPU server's MFU comes from: ``"scenario"`` when its own ``mfu`` option sets it, else
    its type's published source (or :data:`ASSUMED_MFU_SOURCE`). KeyError for an unknown type."""
    if "mfu" in options:
        return SCENARIO_MFU
    return GPU_TYPES[options.get("gpu", DEFAULT_GPU)].mfu_source


def compute_ps(flops: int, peak_flops_per_s: float, mfu: float) -> int:
    """How long ``flops`` take on a GPU of this peak at this MFU, in whole picoseconds (rounded to
    nearest). The one formula the device, the generator and the estimator all use."""
    return round(flops * 1e12 / (peak_flops_per_s * mfu))
