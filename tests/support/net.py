"""Addresses and ports for servers the tests run.

A server that Pods must reach (a stand-in of PinsterApi or Rekognition) listens on the
node address, the one address of this machine that Pods may reach; one that only the
test process talks to listens on 127.0.0.1.
"""

from __future__ import annotations

import socket

from pinster_devcluster import NODE_IP

LOOPBACK = "127.0.0.1"

__all__ = ["LOOPBACK", "NODE_IP", "free_port"]


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
