"""Stands in for ``kubectl port-forward -n NS pod/POD :50051 --address 127.0.0.1`` in tests: it serves
the pod's device host itself, on a free loopback port, after printing kubectl's Forwarding line.

The host's name is the pod's minus ``$FAKE_SCENARIO-`` and ``-0`` (the k8s backend's naming).
"""

from __future__ import annotations

import os
import socket
import sys


def main(argv: list[str]) -> None:
    pod = next(a for a in argv if a.startswith("pod/")).removeprefix("pod/")
    host = pod.removesuffix("-0").removeprefix(os.environ["FAKE_SCENARIO"] + "-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print(f"Forwarding from 127.0.0.1:{port} -> 50051", flush=True)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    os.execv(sys.executable, [sys.executable, "-m", "services.host", "--name", host, "--listen", f"127.0.0.1:{port}"])


if __name__ == "__main__":
    main(sys.argv[1:])
