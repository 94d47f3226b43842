"""The GPU server declares itself (emulators.gpu_server.device): GPUs running a job's per-rank
programs, a scale-up mesh or OLink ports, and one RDMA NIC per GPU."""

from __future__ import annotations

from typing import Any

from emulators.gpu_server.gpus import DEFAULT_GPU, DEFAULT_GPUS, GPU_TYPES
from emulators.kinds import DeviceKind, Problem, SummaryLines
from emulators.kinds import unit_option as _unit
from emulators.olink import spec
from emulators.olink.ports import PORT_FIGURES, PORT_OPTIONS_SCHEMA, SCALE_UP_SUMMARY_RANK, port_totals
from emulators.rdma.options import NICS_OPTION, RDMA_OPTIONS_SCHEMA, check_nic_options, nic_groups

GPU_SERVER_OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "gpus": {"type": "integer", "minimum": 1, "maximum": 64, "description": "GPUs in the server (default 8)"},
        "gpu": {"enum": list(GPU_TYPES), "description": "GPU type: peak, MFU, scale-up (default h100)"},
        # from below any accelerator a job trains on to 100x the fastest (a B200 is ~2,250 dense BF16)
        "tflops": {"type": "number", "minimum": 1, "maximum": 100_000, "description": "dense BF16 peak TFLOP/s "
                   "per GPU, from 1 to 100000 (default: the GPU type's)"},
        # below 1 % a compute op of a large model would outlast any run
        "mfu": {"type": "number", "minimum": 0.01, "maximum": 1,
                "description": "model FLOPs utilisation the GPUs reach, from 0.01 to 1 (default: the GPU type's)"},
        "scale_up_bandwidth": _unit("rate", "scale-up mesh bandwidth per GPU and direction (default: the GPU "
                                    "type's, e.g. 3.6T for NVLink 4)", nonzero=True),
        "scale_up_latency": _unit("time", "scale-up mesh latency per message (default: the GPU type's)"),
        "buffer": _unit("size", "egress queue limit per NIC port (default 64MiB)", nonzero=True),
        "rdma": RDMA_OPTIONS_SCHEMA,
        "nics": NICS_OPTION,
        "olink": PORT_OPTIONS_SCHEMA,
    },
}


def _check_gpu_server_options(options: dict[str, Any], ports: tuple[str, ...]) -> Problem | None:
    scale_up = spec.scale_up_ports(ports)
    nic_ports = tuple(p for p in ports if not spec.is_scale_up_port(p))
    problem = check_nic_options(options, nic_ports)
    if problem is not None:
        return problem
    gpus = options.get("gpus", DEFAULT_GPUS)
    for gpu, names in scale_up.items():
        if gpu >= gpus:
            return ("gpus",), f"port {names[0]!r} is a scale-up port of GPU {gpu}, but the server has {gpus} GPUs"
    nics = len(nic_groups(options, list(nic_ports)))
    if nics and nics != gpus:
        return ("gpus",), (f"{gpus} GPUs and {nics} NICs; give one NIC per GPU (a port each, or two bonded "
                           f"with nics for dual plane), or no ports for a server that talks only inside itself")
    return None


def _summary_total(devices: list[dict[str, Any]]) -> list[str]:
    """The GPUs' OLink scale-up ports of every server summed into one line."""
    summed: dict[str, int] = {}
    for device in devices:
        if device.get("olink"):
            for key, n in port_totals(device).items():
                summed[key] = summed.get(key, 0) + n
    if not summed:
        return []
    return ["  GPU scale-up ports: " + ", ".join(f"{summed[key]} {label}" for key, label in PORT_FIGURES)]


GPU_SERVER = DeviceKind(
    name="gpu_server",
    summary="GPU server: GPUs running a training job's per-rank programs, a scale-up mesh or OLink ports, "
            "one RDMA NIC per GPU",
    options_schema=GPU_SERVER_OPTIONS_SCHEMA,
    class_path="emulators.gpu_server.device:GpuServer",
    portless=True,
    defaults={"gpus": DEFAULT_GPUS, "gpu": DEFAULT_GPU},  # tflops, mfu and the scale-up figures: the GPU type's
    check=_check_gpu_server_options,
    summary_lines=SummaryLines(SCALE_UP_SUMMARY_RANK, total=_summary_total),
    paths="emulators.gpu_server.openconfig:PATHS",
)
