"""Free loopback ports for the servers the tests, benchmarks and demos start."""

from __future__ import annotations

import random
import socket

# A server that also listens on each port + GRPC_OFFSET (SeaweedFS's gRPC ports) needs both free. Both stay below
# the kernel's ephemeral range (32768 and up on Linux), where any outgoing connection may hold a port by the time
# the server binds it.
GRPC_OFFSET = 10_000
PAIRED_PORTS = range(10_000, 20_000)


def free_port() -> int:
    """A loopback port nobody listens on, picked by the kernel."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bindable(port: int) -> bool:
    """Whether nobody listens on loopback ``port`` now."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pairs(count: int) -> list[int]:
    """``count`` distinct ports in ``PAIRED_PORTS``, each free with its ``+ GRPC_OFFSET`` twin free too.

    The ports lie in [10000, 20000) and their twins in [20000, 30000), so no port is another's twin.
    """
    picked: list[int] = []
    while len(picked) < count:
        port = random.choice(PAIRED_PORTS)  # noqa: S311  # nosec B311 - not a secret
        if port not in picked and bindable(port) and bindable(port + GRPC_OFFSET):
            picked.append(port)
    return picked
