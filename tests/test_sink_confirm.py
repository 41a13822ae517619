"""What a stream peer's TCP has acknowledged, against real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import time

from shipper.sinks.confirm import BatchConfirmations, unacknowledged_bytes


async def _stalled_pair() -> tuple[socket.socket, asyncio.StreamWriter, socket.socket]:
    """A listener with a tiny receive buffer, our writer, and the accepted (unread) peer."""
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    _, writer = await asyncio.open_connection("127.0.0.1", lsock.getsockname()[1])
    peer, _ = lsock.accept()
    return lsock, writer, peer


async def test_batches_are_confirmed_when_the_peer_has_them_not_when_written():
    lsock, writer, peer = await _stalled_pair()
    conf = BatchConfirmations()
    try:
        for _ in range(3):
            writer.write(b"x" * 200_000)  # far beyond what a stalled peer takes
            conf.wrote(200_000)
        await asyncio.sleep(0.2)
        assert unacknowledged_bytes(writer) > 200_000
        n, lost = conf.take(writer)
        assert not lost and n < 3
        peer.setblocking(False)
        got = 0
        deadline = time.monotonic() + 10
        while got < 600_000 and time.monotonic() < deadline:  # the peer reads it all
            try:
                got += len(peer.recv(1 << 20))
            except BlockingIOError:
                await asyncio.sleep(0.01)
        while unacknowledged_bytes(writer) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        more, lost = conf.take(writer)
        assert n + more == 3 and not lost
    finally:
        writer.close()
        peer.close()
        lsock.close()


async def test_a_dropped_connection_reports_what_it_had_not_confirmed():
    lsock, writer, peer = await _stalled_pair()
    conf = BatchConfirmations()
    try:
        conf.wrote(0)  # an empty send: confirmed at once
        writer.write(b"y" * 400_000)
        conf.wrote(400_000)
        await asyncio.sleep(0.1)
        conf.dropped(writer)  # a write timeout: the sink closes the connection
        conf.wrote(10)  # the batch sent again on the next connection
        n, lost = conf.take(None)
        assert (n, lost) == (1, True)  # the empty one was confirmed; the big one is to go again
        assert conf.take(None) == (0, False)  # counted afresh from here
    finally:
        writer.close()
        peer.close()
        lsock.close()
