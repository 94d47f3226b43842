"""The container health check: ``python -m orchestrator.deploy.probe [ADDRESS]`` exits 0 when the
device host at ADDRESS (default 127.0.0.1:50051) reports SERVING on grpc.health.v1, 1 otherwise."""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 3.0


def check(address: str, timeout_s: float = TIMEOUT_S) -> str:
    """The server's overall health status by name (SERVING, NOT_SERVING, ...) or UNREACHABLE."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                              timeout=timeout_s)
        except grpc.RpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: list[str]) -> int:
    address = argv[0] if argv else "127.0.0.1:50051"
    status = check(address)
    print(f"{address}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
