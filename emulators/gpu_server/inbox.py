"""Receives over the scale-up fabric (the server's mesh or OLink): a message that comes before its
receive is kept until the receive is posted, and a posted receive waits for its message."""

from __future__ import annotations

from emulators.gpu_server.clock import Done


class Inbox:
    def __init__(self) -> None:
        self.waiting: dict[int, tuple[int, Done]] = {}  # message id -> (bytes, done): posted receives
        self.early: set[int] = set()  # mesh messages that came before their receive
        self.partial: dict[int, int] = {}  # message id -> payload bytes arrived on OLink

    def take(self, uid: int, nbytes: int) -> bool:
        """Whether message ``uid`` of ``nbytes`` is here already (it is taken then)."""
        if uid in self.early:
            self.early.discard(uid)
            return True
        if self.partial.get(uid, -1) >= max(1, nbytes):
            del self.partial[uid]
            return True
        return False

    def wait(self, uid: int, nbytes: int, done: Done) -> None:
        """Call ``done`` once ``nbytes`` of message ``uid`` are here."""
        self.waiting[uid] = (max(1, nbytes), done)

    def delivered(self, uid: int) -> None:
        """Message ``uid`` came whole (over the mesh)."""
        waiting = self.waiting.pop(uid, None)
        if waiting is not None:
            waiting[1]()
        else:
            self.early.add(uid)

    def received(self, uid: int, nbytes: int) -> None:
        """``nbytes`` more payload of message ``uid`` came (one OLink frame)."""
        arrived = self.partial.get(uid, 0) + nbytes
        waiting = self.waiting.get(uid)
        if waiting is not None and arrived >= waiting[0]:
            del self.waiting[uid]
            self.partial.pop(uid, None)
            waiting[1]()
        else:
            self.partial[uid] = arrived

    def clear(self) -> None:
        self.waiting.clear()
        self.early.clear()
        self.partial.clear()
