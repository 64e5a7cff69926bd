"""A free TCP port, for a torch.distributed rendezvous that this machine hosts (launchers, one-process groups,
evaluation)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on ``host`` now ("" = every interface); the caller binds it soon after."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
