"""The test helpers' own promises."""

from __future__ import annotations

import socket

from conftest import free_port


def test_free_ports_are_never_handed_out_twice():
    # 3,000 picks among the ~14,000 the kernel gives bind(): the same number twice is
    # all but certain when each pick is the kernel's alone (two servers of a test
    # could be given one port)
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        ports = [free_port(kind) for _ in range(3000)]
        assert len(set(ports)) == len(ports)
