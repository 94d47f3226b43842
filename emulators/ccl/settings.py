"""NCCL's settings as a job sets them (``job.nccl``), with NCCL's defaults, and the rules NCCL uses to
split a message over channels and steps. Sources are NCCL 2.30.7 (github.com/NVIDIA/nccl, the file
named beside each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from emulators.rdma.settings import local_ack_timeout_ps

KIB = 1024
MIB = 1024 * KIB

DEFAULT_BUFFSIZE = 4 * MIB  # src/init.cc DEFAULT_BUFFSIZE (NCCL_BUFFSIZE, Simple protocol)
DEFAULT_STEPS = 8  # src/include/device.h NCCL_STEPS: slots per connection FIFO
DEFAULT_P2P_CHUNKSIZE = 128 * KIB  # src/init.cc NCCL_P2P_NET_CHUNKSIZE: a p2p step over the network
DEFAULT_IB_TIMEOUT = 20  # src/transport/net_ib/connect.cc NCCL_IB_TIMEOUT: 4.096 us x 2^20 = 4.29 s
DEFAULT_IB_RETRY_CNT = 7  # src/transport/net_ib/connect.cc NCCL_IB_RETRY_CNT
DEFAULT_QPS_PER_CONNECTION = 1  # src/transport/net_ib/connect.cc NCCL_IB_QPS_PER_CONNECTION
P2P_PER_CHANNEL_NET_GBYTES = 14  # src/graph/paths.cc NCCL_P2P_PER_CHANNEL_NET_BW (GB/s a channel carries)
CTS_ENTRY_BYTES = 64  # src/transport/net_ib/common.h struct ncclIbSendFifo (8 devices per NIC): one per step
PART_ALIGN = 4 * KIB  # src/include/device.h ncclP2pPartBounds: parts of a p2p op align to 4 KiB
MAX_CHANNELS = 32  # the QP id has 5 bits for the channel (NCCL's MAXCHANNELS is 64)
MAX_QPS_PER_CONNECTION = 8  # the QP id has 3 bits for it


@dataclass(frozen=True)
class NcclSettings:
    """What the ``nccl:`` block of a job sets, named as NCCL's environment variables."""

    buffsize: int = DEFAULT_BUFFSIZE
    steps: int = DEFAULT_STEPS
    nchannels: int = 0  # 0: NCCL's rule for a network peer (channels_per_net_peer)
    p2p_chunksize: int = DEFAULT_P2P_CHUNKSIZE
    ib_timeout: int = DEFAULT_IB_TIMEOUT
    ib_retry_cnt: int = DEFAULT_IB_RETRY_CNT
    qps_per_connection: int = DEFAULT_QPS_PER_CONNECTION

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> NcclSettings:
        return cls(**(options or {}))

    @property
    def timeout_ps(self) -> int:
        return local_ack_timeout_ps(self.ib_timeout)

    @property
    def ring_slice_steps(self) -> int:
        """Steps per network write of a ring collective (src/include/collectives.h ALLREDUCE_SLICESTEPS,
        REDUCESCATTER_ and ALLGATHER_SLICESTEPS: NCCL_STEPS / 4)."""
        return max(1, self.steps // 4)


def channels_per_net_peer(nic_bps: int, nics: int = 1) -> int:
    """NCCL's channels toward a peer over the network (src/graph/paths.cc ncclTopoGetNchannels): one
    per NIC, more if the NIC's bandwidth needs them at 14 GB/s a channel, rounded up to a power of two
    (ncclTopoComputeP2pChannels). A 400 Gb/s NIC (50 GB/s) gets 4, a 200 Gb/s one 2."""
    gbytes = nic_bps // 8_000_000_000
    channels = max(nics, -(-gbytes // P2P_PER_CHANNEL_NET_GBYTES), 1)
    return min(MAX_CHANNELS, 1 << (channels - 1).bit_length())


def p2p_chunk(nbytes: int, step: int) -> int:
    """The data a p2p step carries for a send of ``nbytes`` (src/enqueue.cc addP2pToPlan, "tune chunk
    size for the network"): the step, a quarter of it below one step, half below eight."""
    if nbytes < step:
        return max(1, step // 4)
    if nbytes < 8 * step:
        return max(1, step // 2)
    return step


def p2p_channels(nbytes: int, per_peer: int, step: int) -> int:
    """Channels a p2p send of ``nbytes`` uses between nodes (src/enqueue.cc addP2pToPlan): as many
    parts of at least half a step as fit, doubled while parts exceed a step, at most ``per_peer``."""
    min_part, max_part = max(1, step // 2), step
    channels = max(1, min(per_peer, -(-nbytes // min_part)))
    part = max(min_part, -(-nbytes // channels))
    while part > max_part and channels <= per_peer // 2:
        channels *= 2
        part = -(-nbytes // channels)
    return channels


def part_bounds(nbytes: int, parts: int) -> list[int]:
    """The size of each of ``parts`` parts of ``nbytes`` (src/include/device.h ncclP2pPartBounds: equal
    parts rounded up to 4 KiB, so the last ones may be short or empty)."""
    even = -(-nbytes // parts)
    size = -(-even // PART_ALIGN) * PART_ALIGN
    return [max(0, min(nbytes, (p + 1) * size) - min(nbytes, p * size)) for p in range(parts)]


def step_sizes(nbytes: int, chunk: int) -> tuple[int, int]:
    """(steps, bytes of the last step) of a part of ``nbytes`` in chunks of ``chunk``: one step at least."""
    if nbytes <= 0:
        return 1, 0
    steps = -(-nbytes // chunk)
    return steps, nbytes - (steps - 1) * chunk


def fill_buffer(buffsize: int, bdp_bytes: int, channels: int) -> int:
    """The buffer a user sets (NCCL_BUFFSIZE) so that ``channels`` connections keep a path's
    bandwidth-delay product in flight: at least the default, rounded up to a whole MiB."""
    need = math.ceil(bdp_bytes / max(1, channels))
    return max(buffsize, -(-need // MIB) * MIB)
