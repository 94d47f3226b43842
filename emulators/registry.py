"""Device kinds known to the testbed: the one place a kind name maps to its model class.

Each kind declares the JSON Schema of its ``options`` mapping. Option values that carry units say so
with ``"x-unit"`` (``rate``, ``size``, ``length``, ``time``, ``ber``); the scenario loader converts them
to integers (bps, bytes, mm, ps) before any device sees them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emulators.gpu_server.gpus import DEFAULT_GPUS, GPU_TYPES
from emulators.olink import spec as olink_spec


@dataclass(frozen=True)
class DeviceKind:
    name: str
    summary: str
    options_schema: dict[str, Any]
    class_path: str  # "module:Class", imported only when a device of this kind is built
    forwards: bool = False  # switches: frames pass through them toward other devices
    latency_ps: int = 0  # a forwarding device's default latency option
    # checks the schema cannot express, on options already in integer units:
    # (options, the device's ports) -> (key path inside options, problem) or None
    check: Callable[[dict[str, Any], tuple[str, ...]], tuple[tuple[str | int, ...], str] | None] | None = None

    def load_class(self) -> type:
        module, _, attr = self.class_path.partition(":")
        cls: type = getattr(importlib.import_module(module), attr)
        return cls


# forwarding latency unless a device's options say otherwise: a switch pipeline, a gateway (deep
# buffers, classification), an OTN node (mapping and FEC)
SWITCH_LATENCY_PS = 600_000
GATEWAY_LATENCY_PS = 2_000_000
OTN_LATENCY_PS = 5_000_000


def _unit(unit: str, description: str, nonzero: bool = False, least: str | None = None) -> dict[str, Any]:
    """An option with a unit; ``nonzero``: the loader refuses 0 (``x-nonzero``); ``least``: the smallest value
    it takes, written with a unit (``x-min``), where less would flood the run with events or frames."""
    return ({"x-unit": unit, "description": description} | ({"x-nonzero": True} if nonzero else {})
            | ({"x-min": least} if least is not None else {}))


# timers that fire again and again: below a microsecond they would schedule an event every few picoseconds
TIMER_LEAST = "1us"
REPLAY_LEAST = "100ns"  # an OLink replay timeout: about one 64 KiB frame's time on the fastest port
SMALLEST_FRAME_BYTES = 64  # the smallest Ethernet frame: no packet, and so no frame a device sends, is smaller


# The RDMA NIC transport's settings (emulators.rdma), shared by every kind that owns NICs.
RDMA_OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "x-expect": "a mapping of RDMA NIC settings",
    "properties": {
        "mtu": _unit("size", "payload bytes per packet (default 4096)"),
        "chunk": _unit(
            "size", "payload bytes per frame the NIC emits: the emulation's granularity (default 64KiB)", nonzero=True
        ),
        "recovery": {"enum": ["go-back-n", "selective-repeat"], "description": "loss recovery (default go-back-n)"},
        "rto": _unit(
            "time", "retransmit timeout of tester flows and the ideal job transport (default 4.096us x 2^14 = "
            "67.1ms; the NCCL transport sets each QP's from nccl.ib_timeout)", nonzero=True, least=TIMER_LEAST
        ),
        "retries": {"type": "integer", "minimum": 0, "maximum": 7,
                    "description": "retry count of tester flows and the ideal job transport (default 7)"},
        "rtt": _unit(
            "time", "round trip (propagation and latency) the window is sized for (default: the path's)", nonzero=True
        ),
        "window": _unit(
            "size", "fixed in-flight limit per QP, instead of 4 bandwidth-delay products of the path", nonzero=True
        ),
        "dcqcn": {"type": "boolean", "description": "DCQCN rate control on CNPs (default true)"},
        "cnp_interval": _unit("time", "at most one CNP per QP in this interval (default 50us)"),
        "dcqcn_g": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 1,
            "description": "alpha gain g (default 1/256)",
        },
        "alpha_timer": _unit("time", "alpha decay period without CNPs (default 55us)", nonzero=True,
                             least=TIMER_LEAST),
        "rate_timer": _unit("time", "rate increase timer (default 55us)", nonzero=True, least=TIMER_LEAST),
        "byte_counter": _unit("size", "rate increase byte counter (default 10MiB)", nonzero=True),
        "fast_recovery_steps": {
            "type": "integer",
            "minimum": 1,
            "description": "F: increase events of fast recovery (default 5)",
        },
        "ai_rate": _unit("rate", "additive increase step (default line rate / 1000)", nonzero=True),
        "hai_rate": _unit("rate", "hyper increase step (default line rate / 100)", nonzero=True),
        "min_rate": _unit("rate", "lowest rate a cut may reach (default line rate / 1000)", nonzero=True),
        "timer_spread": {
            "type": "number",
            "minimum": 1,
            "maximum": 4,
            "description": "a retransmit timeout fires between 1x and this x its nominal value, drawn per timeout "
                           "(NVIDIA documents up to 4x; default 1: exactly)",
        },
        "adaptive_retransmission": {
            "type": "object",
            "additionalProperties": False,
            "required": ["time_base", "init_low", "init_size", "ranges"],
            "x-expect": "a mapping {time_base, init_low, init_size, ranges, start_range}",
            "description": "ConnectX adaptive retransmission with this profile (NVIDIA publishes no default: off "
                           "unless given): timeouts of time_base x 2^exponent, the first drawn from "
                           "[init_low, init_low + init_size) and used once, then each range's exponents "
                           "retries times each; the QP errors when the last range is spent",
            "properties": {
                "time_base": _unit("time", "the unit of the timeouts (at least 4us)", nonzero=True),
                "init_low": {"type": "integer", "minimum": 0, "maximum": 31},
                "init_size": {"type": "integer", "minimum": 1, "maximum": 32},
                "ranges": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 4,
                    "x-expect": "a list of {low, size, retries}",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["low", "size", "retries"],
                        "x-expect": "a mapping {low, size, retries}",
                        "properties": {
                            "low": {"type": "integer", "minimum": 0, "maximum": 31},
                            "size": {"type": "integer", "minimum": 1, "maximum": 32},
                            "retries": {"type": "integer", "minimum": 1, "maximum": 255},
                        },
                    },
                },
                "start_range": {"type": "integer", "minimum": 0, "maximum": 3},
            },
        },
        "slow_restart_rate": _unit(
            "rate", "ConnectX slow restart: after a retransmission timeout the QP's rate drops to this and climbs "
            "back by DCQCN's increase steps (NVIDIA publishes no rate: off unless given)", nonzero=True),
        "retry_limit": {
            "type": "integer",
            "minimum": 1,
            "description": "excessive retransmissions: more than this many within retry_period error the QP "
                           "(WinOF-2 EXT_QP_MAX_RETRY_LIMIT, 50 there when enabled; off unless given)",
        },
        "retry_period": _unit("time", "the period retry_limit counts over (EXT_QP_MAX_RETRY_PERIOD)", nonzero=True,
                              least=TIMER_LEAST),
        "cooperation": {
            "type": "object",
            "additionalProperties": False,
            "x-expect": "a mapping {distance, ber, protection} of booleans",
            "description": "end-network co-operation: what the NIC does with a gateway's path information "
                           "(each default true)",
            "properties": {
                "distance": {"type": "boolean", "description": "the path's round trip sizes the in-flight window "
                             "and, with the NCCL transport, the connection buffers"},
                "ber": {"type": "boolean", "description": "a loss on a path with a BER is corruption: retransmit "
                        "after a probe (2 round trips), no slow restart"},
                "protection": {"type": "boolean", "description": "after a protection switch, retransmit at once "
                               "from the oldest unacknowledged packet"},
            },
        },
    },
}

SWITCH_OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "role": {"enum": ["leaf", "spine"], "description": "where it sits in a two-tier fabric (default leaf)"},
        "mode": {
            "enum": ["roce", "gse"],
            "description": "RoCE (ECMP, PFC, ECN) or GSE (PDC, DGSQ, request/grant, spraying)",
        },
        "buffer": _unit("size", "shared packet buffer (default 64MiB)", nonzero=True),
        "latency": _unit("time", "forwarding pipeline latency (default 600ns)"),
        "pfc": {"type": "boolean", "description": "priority flow control on the lossless priorities (default true)"},
        "lossless_priorities": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 5},
            "uniqueItems": True,
            "description": "priorities PFC protects (default [3], where RDMA traffic runs)",
        },
        "pfc_xoff": _unit(
            "size", "ingress bytes per port and priority that trigger XOFF (default 512KiB; GSE 2MiB)", nonzero=True
        ),
        "pfc_xon": _unit("size", "ingress bytes below which XON is sent (default xoff - 128KiB)"),
        "pfc_headroom": _unit(
            "size", "per port and priority after XOFF (default from the link: 2 x rate x delay + 2 frames)"
        ),
        "lossy_alpha": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "dynamic threshold of lossy queues, x free buffer (default 1)",
        },
        "ecn": {"type": "boolean", "description": "ECN marking (default true in RoCE mode, false in GSE mode)"},
        "ecn_kmin": _unit("size", "queue where marking starts (default 128KiB)"),
        "ecn_kmax": _unit("size", "queue where every frame is marked (default 1MiB)"),
        "ecn_pmax": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "marking probability at kmax (default 0.1)",
        },
        "gse_container": _unit("size", "GSE packet container (PDC) size (default 64KiB)", nonzero=True),
        "reconvergence": _unit(
            "time", "routes avoid a failed link this long after it fails, e.g. BFD + BGP (default 50ms)"
        ),
        "gse_credit": _unit("size", "granted-but-not-arrived bytes per destination port (default 1MiB)", nonzero=True),
    },
}


def _switch_like(
    extra: dict[str, Any],
    drop: tuple[str, ...] = ("role", "mode", "gse_container", "gse_credit", "reconvergence"),
) -> dict[str, Any]:
    """A switch's buffer, PFC and ECN options (without the fabric-role ones) plus a kind's own."""
    properties = {k: v for k, v in SWITCH_OPTIONS_SCHEMA["properties"].items() if k not in drop}
    return {"type": "object", "additionalProperties": False, "properties": properties | extra}


GATEWAY_OPTIONS_SCHEMA = _switch_like(
    {
        "wan_ports": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "uniqueItems": True,
            "description": "ports toward the OTN (the WAN side); every other port faces the site's fabric",
        },
        "fast_cnp": {
            "type": "boolean",
            "description": "CNPs to local senders when the WAN queue builds (default true)",
        },
        "fast_cnp_threshold": _unit("size", "WAN egress queue that triggers fast CNPs (default 4MiB)", nonzero=True),
        "fast_cnp_interval": _unit("time", "at most one fast CNP per flow in this interval (default 50us)"),
        "elephant_bytes": _unit(
            "size", "a flow is an elephant once this much of it has passed (default 10MiB)", nonzero=True
        ),
        "mice_first": {"type": "boolean", "description": "mice ahead of elephants on the WAN (default true)"},
        "path_info": {
            "type": "boolean",
            "description": "tell local NICs the WAN path: length, BER, protection switches (default true)",
        },
    }
)

OTN_OPTIONS_SCHEMA = _switch_like(
    {
        "odus": {
            "type": "object",
            "x-expect": "a mapping of client port to the line ports of its ODUs",
            "additionalProperties": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "description": "ODUs that isolate tenants: each client port's traffic rides only these line ports",
        },
        "protection": {
            "type": "array",
            "x-expect": "a list of protection groups",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["working", "protecting"],
                "properties": {
                    "kind": {
                        "enum": ["1+1", "ots"],
                        "description": "electrical SNCP 1+1 or OTS 1+1 optical (default 1+1)",
                    },
                    "working": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "description": "line ports of the working path",
                    },
                    "protecting": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "description": "line ports of the protection path, one per working port",
                    },
                    "switch_time": _unit("time", "detection + switch time after a failure (default 50ms)"),
                    "revertive": {"type": "boolean", "description": "back to working when it returns (default false)"},
                },
            },
            "description": "1+1 protection groups over line ports",
        },
    }
)

ROCE_MTUS = (256, 512, 1024, 2048, 4096)


def _check_nic_options(options: dict[str, Any], ports: tuple[str, ...]) -> tuple[tuple[str | int, ...], str] | None:
    rdma = options.get("rdma", {})
    mtu = rdma.get("mtu", 4096)
    if mtu not in ROCE_MTUS:
        return ("rdma", "mtu"), f"{mtu} bytes is not a RoCE MTU; use one of {', '.join(map(str, ROCE_MTUS))}"
    chunk = rdma.get("chunk", 64 * 1024)
    if chunk % mtu:
        return ("rdma", "chunk"), f"{chunk} bytes is not a whole number of {mtu}-byte packets (the mtu)"
    if ("retry_limit" in rdma) != ("retry_period" in rdma):
        given, missing = ("retry_limit", "retry_period") if "retry_limit" in rdma else ("retry_period", "retry_limit")
        return ("rdma", given), f"the excessive-retransmission limit needs {missing} too; give both or neither"
    adp = rdma.get("adaptive_retransmission")
    if adp is not None:
        if adp["time_base"] < 4_000_000:
            return ("rdma", "adaptive_retransmission", "time_base"), "is below the 4us the firmware allows; raise it"
        ranges = adp["ranges"]
        for index, (span, after) in enumerate(zip(ranges, ranges[1:], strict=False)):
            if span["low"] + span["size"] > after["low"]:
                return ("rdma", "adaptive_retransmission", "ranges", index + 1), (
                    f"starts at exponent {after['low']}, before the range ahead of it ends (at "
                    f"{span['low'] + span['size'] - 1}); ranges must rise and not overlap")
        for where, low, size in [(("init_low",), adp["init_low"], adp["init_size"]),
                                 *((("ranges", i, "size"), r["low"], r["size"]) for i, r in enumerate(ranges))]:
            if low + size - 1 > 31:
                return ("rdma", "adaptive_retransmission", *where), (
                    f"reaches exponent {low + size - 1}; the timeouts' exponents go up to 31")
        if adp.get("start_range", 0) >= len(adp["ranges"]):
            return ("rdma", "adaptive_retransmission", "start_range"), (
                f"{adp['start_range']} is past the {len(adp['ranges'])} ranges; give an index below it")
    owner: dict[str, str] = {}
    for nic, members in options.get("nics", {}).items():
        for index, port in enumerate(members):
            if port not in ports:
                return ("nics", nic, index), f"no port {port!r} on this device; its ports: {', '.join(ports)}"
            if port in owner:
                return ("nics", nic, index), f"port {port!r} already belongs to NIC {owner[port]!r}"
            owner[port] = nic
    return None


def _check_gateway_options(options: dict[str, Any], ports: tuple[str, ...]) -> tuple[tuple[str | int, ...], str] | None:
    for index, port in enumerate(options.get("wan_ports", [])):
        if port not in ports:
            return ("wan_ports", index), f"no port {port!r} on this gateway; its ports: {', '.join(ports)}"
    return None


def _check_otn_options(options: dict[str, Any], ports: tuple[str, ...]) -> tuple[tuple[str | int, ...], str] | None:
    for client, lines in options.get("odus", {}).items():
        for k, port in enumerate([client, *lines]):
            if port not in ports:
                where: tuple[str | int, ...] = ("odus", client) if k == 0 else ("odus", client, k - 1)
                return where, f"no port {port!r} on this node; its ports: {', '.join(ports)}"
    for index, group in enumerate(options.get("protection", [])):
        for side in ("working", "protecting"):
            for k, port in enumerate(group[side]):
                if port not in ports:
                    return (
                        "protection",
                        index,
                        side,
                        k,
                    ), f"no port {port!r} on this node; its ports: {', '.join(ports)}"
        if len(group["working"]) != len(group["protecting"]):
            return ("protection", index, "protecting"), (
                f"{len(group['protecting'])} ports for {len(group['working'])} working ones; give one per working port"
            )
    return None


def _check_gpu_server_options(options: dict[str, Any],
                              ports: tuple[str, ...]) -> tuple[tuple[str | int, ...], str] | None:
    scale_up = olink_spec.scale_up_ports(ports)
    nic_ports = tuple(p for p in ports if not olink_spec.is_scale_up_port(p))
    problem = _check_nic_options(options, nic_ports)
    if problem is not None:
        return problem
    from emulators.rdma.host import nic_groups

    gpus = options.get("gpus", DEFAULT_GPUS)
    for gpu, names in scale_up.items():
        if gpu >= gpus:
            return ("gpus",), f"port {names[0]!r} is a scale-up port of GPU {gpu}, but the server has {gpus} GPUs"
    nics = len(nic_groups(options, list(nic_ports)))
    if nics and nics != gpus:
        return ("gpus",), (f"{gpus} GPUs and {nics} NICs; give one NIC per GPU (a port each, or two bonded "
                           f"with nics for dual plane), or no ports for a server that talks only inside itself")
    return None


_NICS_OPTION: dict[str, Any] = {
    "type": "object",
    "x-expect": "a mapping of NIC name to the list of its ports, one per plane",
    "additionalProperties": {
        "type": "array",
        "items": {"type": "string"},
        "minItems": 1,
        "maxItems": 2,
        "uniqueItems": True,
    },
    "description": "ports bonded into one dual-plane NIC (default: one NIC per port)",
}

OLINK_GPU_OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "x-expect": "a mapping of OLink settings of the GPUs' scale-up ports",
    "properties": {
        "chunk": _unit("size", "payload bytes per OLink frame: the emulation's grain on scale-up links "
                       "(default 64KiB; at least one packet's payload)", nonzero=True,
                       least=f"{olink_spec.PACKET_PAYLOAD}B"),
        "credit": _unit("size", "receive buffer per scale-up port and virtual channel, announced as credit "
                        "(default 1MiB)", nonzero=True),
        "replay_buffer": _unit("size", "replay buffer per scale-up port (default 2MiB)", nonzero=True),
        "replay_timeout": _unit("time", "replay when a frame is not acknowledged this long (default from "
                                "the link)", nonzero=True, least=REPLAY_LEAST),
    },
}

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
        "nics": _NICS_OPTION,
        "olink": OLINK_GPU_OPTIONS_SCHEMA,
    },
}

OLINK_OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "latency": _unit("time", "port to port forwarding latency (default 250ns)"),
        "credit": _unit("size", "receive buffer per port and virtual channel, announced as credit (default 1MiB)",
                        nonzero=True),
        "replay_buffer": _unit("size", "frames sent and not yet acknowledged, per port (default 2MiB)",
                               nonzero=True),
        "replay_timeout": _unit("time", "replay when a frame is not acknowledged this long (default from the "
                                "link)", nonzero=True, least=REPLAY_LEAST),
        "vcs": {"type": "integer", "minimum": 2, "maximum": 8,
                "description": "virtual channels, each with its own credit (default 2: data, in-network collectives)"},
        "fec": {
            "description": "forward error correction on this switch's links: false for none, or RS(n, k) over "
                           "m-bit symbols (default {n: 272, k: 257, m: 10}, which corrects 7 symbols a codeword)",
            "oneOf": [
                {"const": False},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["n", "k", "m"],
                    "x-expect": "a mapping {n, k, m}",
                    "properties": {
                        "n": {"type": "integer", "minimum": 2, "maximum": 4096},
                        "k": {"type": "integer", "minimum": 1, "maximum": 4096},
                        "m": {"type": "integer", "minimum": 1, "maximum": 16},
                    },
                },
            ],
        },
        "in_network": {"type": "boolean", "description": "reduce and replicate for collectives whose members all "
                       "attach here: all-reduce, reduce-scatter, all-gather (default false)"},
    },
}


def _check_olink_options(options: dict[str, Any], ports: tuple[str, ...]) -> tuple[tuple[str | int, ...], str] | None:
    fec = options.get("fec")
    if isinstance(fec, dict) and fec["k"] >= fec["n"]:
        return ("fec", "k"), f"{fec['k']} data symbols in codewords of {fec['n']}; k must be below n"
    return None


DEVICE_KINDS: dict[str, DeviceKind] = {
    "tester": DeviceKind(
        name="tester",
        summary="traffic test set: sends configured flows (raw or over RDMA), measures throughput, latency, loss",
        options_schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "mtu": _unit("size", "bytes per packet on the wire for raw flows (default 4096; at least 64B, "
                             "the smallest Ethernet frame)", nonzero=True, least=f"{SMALLEST_FRAME_BYTES}B"),
                "buffer": _unit("size", "egress queue limit per port (default 64MiB)", nonzero=True),
                "rdma": RDMA_OPTIONS_SCHEMA,
                "nics": _NICS_OPTION,
            },
        },
        class_path="emulators.tester.device:Tester",
        check=_check_nic_options,
    ),
    "gpu_server": DeviceKind(
        name="gpu_server",
        summary="GPU server: GPUs running a training job's per-rank programs, a scale-up mesh or OLink ports, "
                "one RDMA NIC per GPU",
        options_schema=GPU_SERVER_OPTIONS_SCHEMA,
        class_path="emulators.gpu_server.device:GpuServer",
        check=_check_gpu_server_options,
    ),
    "gateway": DeviceKind(
        name="gateway",
        summary="intelligent computing gateway: deep buffer, WAN back-pressure, fast CNP, flow classes, path info",
        options_schema=GATEWAY_OPTIONS_SCHEMA,
        class_path="emulators.gateway.device:Gateway",
        check=_check_gateway_options,
        forwards=True,
        latency_ps=GATEWAY_LATENCY_PS,
    ),
    "otn": DeviceKind(
        name="otn",
        summary="OTN node: client ports onto line ODUs over fiber, 1+1 / OTS protection, Flex-O line rates",
        options_schema=OTN_OPTIONS_SCHEMA,
        class_path="emulators.otn.node:OtnNode",
        check=_check_otn_options,
        forwards=True,
        latency_ps=OTN_LATENCY_PS,
    ),
    "olink": DeviceKind(
        name="olink",
        summary="OLink scale-up switch: credits per virtual channel, link-level retry with light FEC, "
                "optional in-network all-reduce/all-gather",
        options_schema=OLINK_OPTIONS_SCHEMA,
        class_path="emulators.olink.switch:OLinkSwitch",
        check=_check_olink_options,
        forwards=True,
        latency_ps=olink_spec.DEFAULT_LATENCY_PS,
    ),
    "switch": DeviceKind(
        name="switch",
        summary="Ethernet leaf or spine switch: RoCE mode (ECMP, shared buffer, PFC, ECN) or GSE mode",
        options_schema=SWITCH_OPTIONS_SCHEMA,
        class_path="emulators.ethernet.switch:Switch",
        forwards=True,
        latency_ps=SWITCH_LATENCY_PS,
    ),
}
