"""Free loopback ports for the servers tests start (stacks, clusters, the load test)."""

import socket


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nobody listened on a moment ago (all bound at once, so no two
    are the same)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
