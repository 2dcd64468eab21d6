"""Container health check: `healthcheck.py grpc PORT` (grpc.health.v1, overall service) or `healthcheck.py http URL`.

Exit 0 when SERVING (or HTTP 2xx), 1 otherwise. Used by the Dockerfiles' HEALTHCHECK and by Compose; Kubernetes
uses its native gRPC probes instead.
"""

import sys
import urllib.request


def check_grpc(port: int, timeout_s: float = 2.0) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def check_http(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= int(response.status) < 300
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in {"grpc", "http"}:
        print("usage: healthcheck.py grpc PORT | http URL", file=sys.stderr)
        return 2
    healthy = check_grpc(int(argv[2])) if argv[1] == "grpc" else check_http(argv[2])
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
