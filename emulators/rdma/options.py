"""What every kind with RDMA NICs declares: the ``rdma`` options of its NICs' transport
(emulators.rdma), the ``nics`` option that bonds ports into dual-plane NICs, and their checks."""

from __future__ import annotations

from typing import Any

from emulators.kinds import TIMER_LEAST, Problem
from emulators.kinds import unit_option as _unit

# the RDMA NIC transport's settings (emulators.rdma)
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

NICS_OPTION: dict[str, Any] = {
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

ROCE_MTUS = (256, 512, 1024, 2048, 4096)


def nic_groups(options: dict[str, Any], ports: list[str]) -> list[tuple[str, list[str]]]:
    """(NIC name, its ports in plane order) for every NIC of a device with these options and ports."""
    groups = [(name, list(members)) for name, members in options.get("nics", {}).items()]
    grouped = {p for _, members in groups for p in members}
    return groups + [(p, [p]) for p in ports if p not in grouped]


def check_nic_options(options: dict[str, Any], ports: tuple[str, ...]) -> Problem | None:
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
