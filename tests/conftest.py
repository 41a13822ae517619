"""Shared test helpers. Tests use the real daemontools, ucspi-tcp, rsyslog and
ClickHouse binaries; a missing one is a failure, never a skip."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def require_binary(name: str) -> str:
    """Path of a real binary the test needs; fail (not skip) when it is missing."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}") if Path(p).exists()),
        None,
    )
    if path is None:
        pytest.fail(f"{name} not found: install it (see .ci/run) — this test needs the real binary")
    return path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
