"""Which way a message between two ranks goes, and the ways: the server's own scale-up mesh in closed
form (:mod:`.mesh`), OLink ports frame by frame (:mod:`.olink_transport`), or the GPUs' NICs by the
job's transport (:mod:`emulators.ccl`: NCCL's connections, or one idealised QP per message)."""

from __future__ import annotations

from collections.abc import Mapping

from emulators.ccl.base import NicTransport
from emulators.gpu_server.clock import Done
from emulators.gpu_server.inbox import Inbox
from emulators.gpu_server.mesh import ScaleUpMesh
from emulators.gpu_server.olink_transport import OLinkTransport, Piece
from emulators.gpu_server.rank import Rank
from emulators.gpu_server.traffic import FABRIC, SCALE_UP, WAN, Traffic
from emulators.model.job import JobPlan
from emulators.olink import spec as olink_spec


class Transports:
    def __init__(self, name: str, plan: JobPlan, site_of: Mapping[str, str | None], mesh: ScaleUpMesh,
                 olink: OLinkTransport, nic: NicTransport, inbox: Inbox, traffic: Traffic,
                 counters: dict[str, int]) -> None:
        self.name = name
        self.plan = plan
        self.site_of = site_of  # device -> its site: traffic between sites is WAN traffic
        self.mesh = mesh
        self.olink = olink
        self.nic = nic
        self.inbox = inbox
        self.traffic = traffic
        self.counters = counters

    @property
    def scale_up_frames(self) -> bool:
        """Whether this server's GPUs reach each other through OLink switches (not the closed-form mesh)."""
        return bool(self.olink.of_gpu)

    def link_class(self, peer: int) -> str:
        device = self.plan.ranks[peer].device
        if device == self.name:
            return SCALE_UP
        return FABRIC if self.site_of[device] == self.site_of[self.name] else WAN

    def account(self, rank: Rank, dim: str, link_class: str, nbytes: int) -> None:
        self.traffic.account(rank, dim, link_class, nbytes)

    def transfer(self, rank: Rank, peer: int, nbytes: int, uid: int, dim: str, done: Done, comm: int) -> None:
        """Send ``nbytes`` from ``rank`` to rank ``peer`` on communicator ``comm`` (emulators.ccl.nccl);
        ``done`` once the data is there (scale-up) or acknowledged (over the NICs)."""
        olink_path = self.olink.reaches(rank, peer)
        link_class = SCALE_UP if olink_path else self.link_class(peer)
        self.traffic.account(rank, dim, link_class, nbytes)
        self.counters["messages_sent"] += 1
        if olink_path:
            self.olink.send(rank, [(0, max(1, nbytes), self.olink.addresses(peer))], uid, olink_spec.DATA_VC,
                            None, done)
            return
        if link_class == SCALE_UP:
            self.mesh.send(rank, peer, nbytes, uid, done)
            return
        if rank.nic is None:
            raise RuntimeError(f"{self.name}: GPU {rank.gpu} has no NIC, and rank {rank.rank} sends to "
                               f"rank {peer} on {self.plan.ranks[peer].device}")
        self.nic.send(rank, peer, comm, nbytes, uid, done)

    def receive(self, rank: Rank, peer: int | None, nbytes: int, uid: int, comm: int, done: Done) -> bool:
        """Whether message ``uid`` of ``nbytes`` from rank ``peer`` (None: from an OLink switch) has
        already arrived at ``rank`` (then ``done`` is not called: the caller goes on); otherwise
        ``done`` is called when it has. Over the NICs the job's transport receives it on ``comm``."""
        if self.inbox.take(uid, nbytes):
            return True
        if peer is not None and rank.nic is not None and not self.olink.reaches(rank, peer) \
                and self.link_class(peer) != SCALE_UP:
            return self.nic.recv(rank, peer, comm, nbytes, uid, done)
        self.inbox.wait(uid, nbytes, done)
        return False

    def olink_send(self, rank: Rank, pieces: list[Piece], uid: int, vc: int, fields: dict[str, int] | None,
                   done: Done) -> None:
        self.olink.send(rank, pieces, uid, vc, fields, done)

    def in_network_addresses(self, group: int) -> list[int] | None:
        return self.olink.in_network_addresses(group)

    def mesh_collective(self, key: tuple[int, int, int], rank: int, members: int, collective: str, nbytes: int,
                        dim: str, done: Done) -> None:
        self.mesh.collective(key, rank, members, collective, nbytes, dim, done)

    def abort(self, restart_iteration: int) -> None:
        """The attempt is over: drop what is under way; the job goes back to ``restart_iteration``."""
        self.traffic.restart_from(restart_iteration)
        self.nic.abort()
        self.inbox.clear()
        self.olink.abort()
        self.mesh.abort()

    def resume(self) -> None:
        self.mesh.resume()
