"""systemd's sd_notify protocol, stdlib only: one datagram per state change.

When systemd starts a ``Type=notify`` service it sets ``NOTIFY_SOCKET`` to an
AF_UNIX datagram socket (a path, or ``@name`` for the abstract namespace). The
service sends ``READY=1`` once it is up, ``STATUS=...`` for ``systemctl
status``, ``WATCHDOG=1`` at least every ``WATCHDOG_USEC``/2 microseconds when
``WatchdogSec=`` is set, and ``STOPPING=1`` when it begins to stop. Without
``NOTIFY_SOCKET`` (daemontools, a terminal) every call is a no-op.

Sending never raises and never blocks: a notification is advisory, and the
daemon must not stop shipping because systemd went away.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("shipper.sdnotify")


class Notifier:
    """Sends notifications to ``NOTIFY_SOCKET``; every method is a no-op without one."""

    __slots__ = ("address", "watchdog_usec", "_sock", "_warned")

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half systemd's timeout; None when off."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2_000_000

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; False when not sent."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message, self.address)
            return True
        except OSError as exc:
            if not self._warned:  # once: systemd gone or socket full is not worth a log flood
                log.warning("sd_notify to %r failed: %s", self.address, exc)
                self._warned = True
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def run_watchdog(notifier: Notifier) -> None:
    """Ping the watchdog every half period until cancelled; returns at once when it is off.

    It proves the event loop is alive, nothing more: a SIEM outage is handled
    by the buffer and must not make systemd restart us.
    """
    interval = notifier.watchdog_interval()
    if interval is None or not notifier.enabled:
        return
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


def _address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode("utf-8")  # Linux abstract namespace
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract: ignored", value)
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """``WATCHDOG_USEC``, if it is meant for this process (``WATCHDOG_PID`` unset or ours)."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec)


def _one_line(text: str) -> str:
    return " ".join(text.split())
