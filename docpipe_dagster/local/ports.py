"""Ports: which are free, which are taken and by whom. Standard library (and psutil) only."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence


class ServiceProblem(RuntimeError):
    """A service a command needs is not usable; the message says what to change."""


class PortInUse(ServiceProblem):
    pass


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens there (the check a server's bind would fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too: sockets lingering in TIME_WAIT are no conflict.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def port_holder(port: int) -> str | None:
    """'pid 123 (python -m docpipe_dagster_mocks all)' for the process listening on `port`, if it can be known."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid is None:
                    return None
                proc = psutil.Process(conn.pid)
                cmdline = " ".join(
                    os.path.basename(a) if i == 0 else a for i, a in enumerate(proc.cmdline())
                )
                return f"pid {conn.pid} ({cmdline or proc.name()})"
    except Exception:  # no permission, a process gone meanwhile: the port is still taken
        return None
    return None


def require_free_ports(wanted: Sequence[tuple[str, int, str]], host: str = "127.0.0.1") -> None:
    """(label, port, how to change it) each; raise PortInUse naming the first taken one."""
    for label, port, change in wanted:
        if port_in_use(port, host):
            holder = port_holder(port)
            by = f" by {holder}" if holder else ""
            raise PortInUse(
                f"port {port} ({label}) is already in use{by}: stop that process or {change}"
            )


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports. Each socket stays bound until all are picked:
    ports asked for one after another can come back the same (the kernel reuses a port
    just released), and two services would then fight over one."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def named_free_ports(names: Sequence[str]) -> dict[str, int]:
    """A distinct free loopback port for each name (free_ports)."""
    return dict(zip(names, free_ports(len(names)), strict=True))
