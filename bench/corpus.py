"""A realistic qmail log corpus for benchmarks: deterministic, every line unique.

Traffic model (per accepted mail): tcpserver/sslserver status, pid, ok; sometimes
rblsmtpd; s/qmail qmail-smtpd decisions (or recordio replies with the 250 qp
that links the session to the queue); tcpserver end; then qmail-send's
new/info/starting delivery/status/delivery/status/end for 1–3 recipients,
local and remote, with successes, failures and deferrals (tried again until they
succeed or fail); a failure's bounce (sender <>) is queued and delivered in turn,
its failure bounced to the postmaster (#@[]), whose failure is a triple bounce.
Delivery ids go up across the interleaved streams, as one qmail-send's do.
Each line carries a TAI64N label 1 µs after the previous one, so the label is a
unique marker of the line (the counting receivers use it).

    python bench/corpus.py --lines 1000000 --out corpus.log          # one file
    python bench/corpus.py --lines 1000000 --multilog DIR --size 1000000   # archives + current
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
from collections.abc import Generator, Iterator

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from shipper.tai64n import encode  # noqa: E402

# 2025-12-03: labels "40000000693000…", as a live log's of these years; a quarter of
# them hold a run of 19+ digits (which once sent whole batches down the slow path)
START = 0x69300000 - 10  # the label adds 10: "4000000069300000"

DOMAINS = ["example.com", "example.org", "mail.example.net", "lists.example.edu", "corp.example"]
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
         "mallory", "oscar", "peggy", "trent", "victor", "walter"]
REMOTE_OK = [
    "{ip}_accepted_message./Remote_host_said:_250_2.0.0_Ok:_queued_as_{qid}/",
    "{ip}_TLS_transmitted_message_accepted./Remote_host_said:_250_OK_id={qid}/",
]
REMOTE_DEFER = [
    "Connected_to_{ip}_but_greeting_failed./Remote_host_said:_421_4.7.0_Try_again_later/",
    "Sorry,_I_wasn't_able_to_establish_an_SMTP_connection._(#4.4.1)/",
    "{ip}_does_not_like_recipient./Remote_host_said:_450_4.2.1_Mailbox_busy/",
]
REMOTE_FAIL = [
    "{ip}_does_not_like_recipient./Remote_host_said:_550_5.1.1_<{rcpt}>:_Recipient_address_rejected:_User_unknown/Giving_up_on_{ip}./",
    "Sorry,_I_couldn't_find_any_host_named_{dom}._(#5.1.2)/",
]
LOCAL_OK = ["did_0+0+1/", "did_1+0+0/", "did_0+1+0/qp_{qp}/"]
LOCAL_FAIL = ["Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/"]
CONDITIONS_REJECT = ["Failed_Rcptto", "Invalid_Relay", "Bad_Mailfrom", "DNS_Helo", "Bad_Rcptto"]
CONDITIONS_ACCEPT = ["Recipients_Cdb", "Recipients_Pam", "Relay_Client", "Rcpthosts_Rcptto"]


def _ip(r: random.Random) -> str:
    if r.random() < 0.1:
        return f"2001:db8:{r.randrange(65536):x}::{r.randrange(65536):x}"
    return f"{r.randrange(1, 224)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"


def _addr(r: random.Random) -> str:
    return f"{r.choice(USERS)}{r.randrange(1000)}@{r.choice(DOMAINS)}"


def _delivery(r: random.Random, channel: str, rc: str, qp: int, retry: bool) -> tuple[str, str]:
    """A delivery's result and report text. A retry after a deferral ends the matter
    more often (success or failure) than a first attempt."""
    x = r.random()
    rip = _ip(r)
    fmt = {"ip": rip, "qid": f"{r.randrange(16**10):010X}", "rcpt": rc,
           "dom": rc.split("@")[1], "qp": qp + 7}
    if channel == "local":
        if x < 0.95:
            result, text = "success", r.choice(LOCAL_OK)
        else:
            result, text = "failure", r.choice(LOCAL_FAIL)
    elif x < (0.6 if retry else 0.85):
        result, text = "success", r.choice(REMOTE_OK)
    elif x < 0.95:
        result, text = "deferral", r.choice(REMOTE_DEFER)
    else:
        result, text = "failure", r.choice(REMOTE_FAIL)
    return result, text.format(**fmt)


def _queue(r: random.Random, msg_id: int, rcpts: list[str], qp: int, ids: Iterator[int],
           bounce: str | None = None) -> Generator[str, None, str | None]:
    """qmail-send's lines for one message from its ``info msg`` on: each recipient's
    attempts (a deferral is tried again, up to 3 retries, the last one final), then
    ``bounce msg`` if one failed, then ``end msg``. ``bounce``: this message is a bounce
    (sender ``<>``) or a double bounce (``#@[]``): its failure is bounced on to the
    postmaster, or (a double bounce) discarded: ``triple bounce``. Returns
    "bounce" when it queued a bounce, "triple" when it discarded one."""
    bounced = False
    for rc in rcpts:
        channel = "local" if rc.endswith("example.com") else "remote"
        for tries in range(4):
            delivery = next(ids)
            yield f"starting delivery {delivery}: msg {msg_id} to {channel} {rc}"
            yield f"status: local {int(channel == 'local')}/10 remote {int(channel == 'remote')}/120"
            result, text = _delivery(r, channel, rc, qp, tries > 0)
            if result == "deferral" and tries == 3:
                result, text = "failure", ("I'm_not_going_to_try_again;_this_message_has_been_in_"
                                           "the_queue_too_long./")
            yield f"delivery {delivery}: {result}: {text}"
            yield "status: local 0/10 remote 0/120"
            bounced |= result == "failure"
            if result != "deferral":
                break
    said = None
    if bounced:
        if bounce == "#@[]":
            yield f"triple bounce: discarding bounce/{msg_id}"
            said = "triple"
        else:
            yield f"bounce msg {msg_id} qp {qp + 11}"
            said = "bounce"
    yield f"end msg {msg_id}"
    return said


def events(r: random.Random, base: int = 0, ids: Iterator[int] | None = None) -> Iterator[str]:
    """Endless stream of program texts (without stamps): one session and its mail after
    another. ``base`` separates the id spaces of streams that run interleaved; ``ids``
    gives the delivery ids, which streams running interleaved share (one qmail-send
    numbers its deliveries 1, 2, 3… whatever message they are of)."""
    msg_id = 100000 + base * 10_000_000
    pid = 20000 + base * 1_000_000
    ids = ids if ids is not None else itertools.count(base * 10_000_000 + 1)
    while True:
        pid += r.randrange(1, 7)
        ip = _ip(r)
        host = f"mx{r.randrange(100)}.{r.choice(DOMAINS)}"
        server = "sslserver" if r.random() < 0.3 else "tcpserver"
        port = 465 if server == "sslserver" else 25
        yield f"{server}: status: {r.randrange(1, 40)}/40"
        yield f"{server}: pid {pid} from {ip}"
        yield f"{server}: ok {pid} mail.example.com:192.0.2.10:{port} {host}:{ip}::{r.randrange(1024, 65535)}"
        if server == "sslserver":
            yield f"sslserver: ssl {pid} accept TLSv1.3:TLS_AES_256_GCM_SHA384"
        if r.random() < 0.15:
            yield f"rblsmtpd: {ip} pid {pid}: 451 http://www.spamhaus.org/query/bl?ip={ip}"
            yield f"{server}: end {pid} status 0"
            continue
        sender = _addr(r)
        rcpts = [_addr(r) for _ in range(r.choice((1, 1, 1, 2, 3)))]
        proto = "ESMTPS" if server == "sslserver" else r.choice(("ESMTP", "ESMTPS", "SMTP"))
        if r.random() < 0.2:
            cond = r.choice(CONDITIONS_REJECT)
            yield (f"qmail-smtpd: pid {pid} Reject::RCPT::{cond} P:{proto} S:{ip}:{host} H:{host} "
                   f"F:{sender} T:{rcpts[0]}")
            if r.random() < 0.5:
                yield f"{pid} > 553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r "
            yield f"{server}: end {pid} status 256"
            continue
        for rc in rcpts:
            yield (f"qmail-smtpd: pid {pid} Accept::RCPT::{r.choice(CONDITIONS_ACCEPT)} P:{proto} "
                   f"S:{ip}:{host} H:{host} F:{sender} T:{rc}")
        qp = pid + 1
        yield f"{pid} > 250 ok {START + r.randrange(10**6)} qp {qp}\r "
        yield f"{server}: end {pid} status 0"
        msg_id += r.randrange(1, 50)
        size = r.randrange(800, 200000)
        yield f"new msg {msg_id}"
        yield f"info msg {msg_id}: bytes {size} from <{sender}> qp {qp} uid {r.choice((89, 7791, 0))}"
        out = yield from _queue(r, msg_id, rcpts, qp, ids)
        # the bounce qmail-send queued (qp + 11) to the sender; its failure goes on to
        # the postmaster as a double bounce (qp + 22), whose failure is discarded
        kind, to, bqp = "", sender, qp + 11
        while out == "bounce":
            msg_id += r.randrange(1, 50)
            yield f"new msg {msg_id}"
            yield f"info msg {msg_id}: bytes {size // 4 + 1200} from <{kind}> qp {bqp} uid 7796"
            out = yield from _queue(r, msg_id, [to], bqp, ids, kind)
            kind, to, bqp = "#@[]", "postmaster@example.com", bqp + 11
        # the qps qmail-queue had for this mail's bounces (+11, +22) and what its
        # deliveries forwarded (+7, +18) are not a later session's: pids go round slowly
        pid += 40


def lines(n: int, seed: int = 1, concurrency: int = 16) -> Iterator[bytes]:
    """n stamped lines, each with a unique TAI64N label (1 ms apart: a busy server's
    1,000 lines/s; 1M lines span 17 minutes).

    ``concurrency`` streams of sessions and mails run interleaved, as on a busy
    host: about that many mails and sessions are open at any time (what the
    tracker's memory depends on).
    """
    r = random.Random(seed)
    ids = itertools.count(1)  # one qmail-send: its delivery ids go up whatever the stream
    streams = [events(random.Random(seed * 1000 + k), k, ids) for k in range(concurrency)]
    t_us = START * 1_000_000
    for _ in range(n):
        t_us += 1000
        secs, us = divmod(t_us, 1_000_000)
        yield f"{encode(secs, us * 1000 + 500)} {next(streams[r.randrange(concurrency)])}\n".encode()


def write_file(path: str, n: int, seed: int = 1, concurrency: int = 16) -> int:
    size = 0
    with open(path, "wb") as f:
        buf: list[bytes] = []
        for ln in lines(n, seed, concurrency):
            buf.append(ln)
            if len(buf) >= 10000:
                data = b"".join(buf)
                f.write(data)
                size += len(data)
                buf = []
        data = b"".join(buf)
        f.write(data)
        size += len(data)
    return size


def write_multilog(directory: str, n: int, size: int = 99999, seed: int = 1) -> int:
    """A multilog directory as multilog leaves it: @<label>.s archives (rotated at
    about ``size`` bytes on a line boundary) and a current."""
    os.makedirs(directory, exist_ok=True)
    out: list[bytes] = []
    used = 0
    files = 0
    last_label = ""

    def flush(name: str) -> None:
        with open(os.path.join(directory, name), "wb") as f:
            f.write(b"".join(out))

    for ln in lines(n, seed):
        out.append(ln)
        used += len(ln)
        last_label = ln[:25].decode()
        if used >= size - 2000:
            flush(f"{last_label}.s")
            files += 1
            out, used = [], 0
    flush("current")
    return files


def interpreter() -> str:
    """Which Python ran the benchmark: builds differ a lot in speed. Here Debian's
    /usr/bin/python3 (what the README's commands use on Debian) runs the shipper
    about 1.4x faster than a pyenv build with a shared libpython and no PGO."""
    return f"Python {sys.version.split()[0]} ({os.path.realpath(sys.executable)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="write one file")
    ap.add_argument("--multilog", help="write a multilog directory")
    ap.add_argument("--size", type=int, default=99999, help="multilog s (rotation size)")
    ap.add_argument("--concurrency", type=int, default=16, help="interleaved sessions/mails")
    args = ap.parse_args()
    if args.out:
        print(f"{args.out}: {write_file(args.out, args.lines, args.seed, args.concurrency)} bytes")
    if args.multilog:
        print(f"{args.multilog}: {write_multilog(args.multilog, args.lines, args.size, args.seed)} archives")
    if not args.out and not args.multilog:
        sys.stdout.buffer.writelines(lines(args.lines, args.seed, args.concurrency))


if __name__ == "__main__":
    main()
