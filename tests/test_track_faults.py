"""Faults of mail tracking a fault hunt found (2026-12-01) with the log sequences a busy
qmail or Postfix server writes, each pinned by a test that failed before its fix.

qmail-send lines are in the exact grammar of notqmail qmail-send.c (formats.md §4),
with multilog labels; Postfix lines are modelled on the real Postfix 3.7.11 lines of
tests/fixtures/samples/postfix_3.7_real.txt (a ``status=deferred`` connect failure).
All are read through the real reader and LineParser (the CLI).
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import orjson

from shipper.follower import Gap
from shipper.parse import LineParser
from shipper.pipeline import gap_record
from shipper.track.cli import stats_main, track_main
from shipper.track.correlator import Correlator
from shipper.track.report import render_text

EPOCH = 1_764_547_200  # 2025-12-01T00:00:00Z
DEFER = "Sorry,_I_wasn't_able_to_establish_an_SMTP_connection._(#4.4.1)/"
FAIL = ("192.0.2.5_does_not_like_recipient./Remote_host_said:_550_5.1.1_no_such_user/"
        "Giving_up_on_192.0.2.5./")
TEXT = "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)"  # DEFER as parsed


def _lab(sec: float) -> str:
    secs, frac = divmod(EPOCH * 10**9 + round(sec * 10**9), 10**9)
    return f"@{secs + 2**62 + 10:016x}{frac:08x}"


def _logdir(d: Path, lines: list[tuple[float, str]]) -> Path:
    d.mkdir(exist_ok=True)
    (d / "current").write_text("".join(f"{_lab(t)} {text}\n" for t, text in lines))
    return d


def _run(fn, argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    rc = fn(argv, stdout=buf)
    return rc, buf.getvalue()


def _dead_host_mail(retries: int) -> list[tuple[float, str]]:
    """A mail to a host that is down, retried on qmail's schedule for remote deliveries
    (chanskip 20 s: attempt n at 20·n² s; ~170 in the week of queuelifetime), then
    delivered; another recipient delivered at once."""
    lines = [(0.0, "new msg 4711"),
             (0.001, "info msg 4711: bytes 4200 from <list-return-7-@lists.example.org-@[]> "
                     "qp 20001 uid 89"),
             (0.01, "starting delivery 1: msg 4711 to remote ok@far.example"),
             (0.5, "delivery 1: success: 192.0.2.5_accepted_message./Remote_host_said:_250_ok/")]
    d = 1
    for n in range(retries + 1):
        t = 1.0 + 20 * n * n
        d += 1
        lines.append((t, f"starting delivery {d}: msg 4711 to remote sub@dead.example"))
        if n < retries:
            lines.append((t + 30, f"delivery {d}: deferral: {DEFER}"))
        else:
            lines.append((t + 2, f"delivery {d}: success: 192.0.2.9_accepted_message./"
                                 "Remote_host_said:_250_ok/"))
    lines.append((1.0 + 20 * retries * retries + 3, "end msg 4711"))
    return lines


def test_stats_count_every_deferral_of_a_host_retried_past_the_attempts_kept(tmp_path: Path) -> None:
    # 120 deferrals over ~3 days (a recipient keeps its last 50 attempts): deferral
    # reasons, deferrals by host and the delivery times counted 49 of them, while
    # the totals counted 120
    send = _logdir(tmp_path / "send", _dead_host_mail(120))
    rc, out = _run(stats_main, ["--json", str(send)])
    assert rc == 0
    d = orjson.loads(out)
    assert d["deliveries"]["attempts"] == 122 and d["deliveries"]["deferral"] == 120
    assert d["deferral_reasons"] == [
        {"reason": TEXT, "count": 120}]
    assert d["deferrals_by_host"] == [{"host": "@dead.example", "count": 120}]
    xd = d["delivery_time_s"]
    assert xd["count"] == 122
    assert abs(xd["mean"] - (120 * 30 + 0.49 + 2) / 122) < 0.01

    rc, out = _run(track_main, ["--json", "--to", "dead.example", str(send)])
    mail = orjson.loads(out.splitlines()[0])
    r = next(r for r in mail["recipients"] if r["rcpt_to"] == "sub@dead.example")
    assert r["n_attempts"] == 121 and len(r["attempts"]) == 50
    assert r["attempts_dropped"] == 71
    assert r["attempts_folded"] == [{"result": "deferral", "text": TEXT, "count": 71, "timed": 71,
                                     "time_s": 2130.0}]
    assert (mail["n_success"], mail["n_deferral"]) == (2, 120)


EPOCH_PF = 1_795_672_800  # 2026-11-26T06:00:00Z


def _postfix_deferred_days(tmp_path: Path) -> Path:
    """A Postfix mail to a host refusing connections for five days: qmgr's backoff
    (300 s doubling to 4000 s) retries it 111 times, then bounces it."""
    q = "3F1A220C7A1"
    lines = [f"{_syslog(EPOCH_PF)} mx postfix/cleanup[100]: {q}: message-id=<dead1@client.test>",
             f"{_syslog(EPOCH_PF)} mx postfix/qmgr[101]: {q}: from=<alice@relay.test>, size=300, "
             "nrcpt=1 (queue active)"]
    t, back, n = 0, 300, 0
    while t < 5 * 86400:
        n += 1
        s = EPOCH_PF + t
        lines.append(f"{_syslog(s)} mx postfix/smtp[{200 + n}]: {q}: to=<bob@dead.test>, relay=none, "
                     f"delay={t}, delays={t}/0/0.02/0, dsn=4.4.1, status=deferred (connect to "
                     "dead.test[192.0.2.9]:25: Connection refused)")
        t += back
        back = min(back * 2, 4000)
    s = EPOCH_PF + t
    lines.append(f"{_syslog(s)} mx postfix/smtp[{200 + n + 1}]: {q}: to=<bob@dead.test>, relay=none, "
                 f"delay={t}, delays={t}/0/0.02/0, dsn=4.4.1, status=bounced (connect to "
                 "dead.test[192.0.2.9]:25: Connection refused)")
    lines.append(f"{_syslog(s + 1)} mx postfix/qmgr[101]: {q}: removed")
    p = tmp_path / "mail.log"
    p.write_text("\n".join(lines) + "\n")
    assert n == 111
    return p


def _syslog(unix: int) -> str:
    tm = time.gmtime(unix)
    return f"{time.strftime('%b', tm)} {tm.tm_mday:2d} {time.strftime('%H:%M:%S', tm)}"


def test_a_postfix_recipient_retried_for_days_has_every_attempt_counted(tmp_path: Path) -> None:
    # its n_attempts said 50 (the attempts kept), and stats counted 50 attempts, 49
    # deferrals, of 112
    log = _postfix_deferred_days(tmp_path)
    rc, out = _run(track_main, ["--json", "--utc", "--year", "2026", str(log)])
    assert rc == 0
    mail = orjson.loads(out.splitlines()[0])
    (r,) = mail["recipients"]
    assert (r["result"], r["n_attempts"], len(r["attempts"])) == ("failure", 112, 50)
    rc, out = _run(stats_main, ["--json", "--utc", "--year", "2026", str(log)])
    d = orjson.loads(out)
    assert (d["deliveries"]["attempts"], d["deliveries"]["deferral"]) == (112, 111)
    assert d["deferral_reasons"] == [
        {"reason": "connect to dead.test[192.0.2.9]:25: Connection refused", "count": 111}]
    assert d["deferrals_by_host"] == [{"host": "@dead.test", "count": 111}]
    assert d["delivery_time_s"]["count"] == 112


def test_until_finds_a_mail_begun_before_the_input_by_its_first_attempt(tmp_path: Path) -> None:
    # The log (multilog's archives keep a few days) begins while msg 500, queued before
    # it, is retried; it is delivered an hour later. "--until 00:10" asked for mails
    # begun by then and was answered by its end: nothing matched, stats counted none
    send = _logdir(tmp_path / "send", [
        (0.0, "starting delivery 7: msg 500 to remote sub@slow.example"),
        (30.0, f"delivery 7: deferral: {DEFER}"),
        (3600.0, "starting delivery 8: msg 500 to remote sub@slow.example"),
        (3601.0, "delivery 8: success: 192.0.2.9_accepted_message./Remote_host_said:_250_ok/"),
        (3601.1, "end msg 500")])
    until = ["--utc", "--until", "2025-12-01T00:10:00Z", str(send)]
    rc, out = _run(track_main, ["--json", *until])
    assert rc == 0
    mail = orjson.loads(out)
    assert mail["msg"] == 500 and "partial" in mail["flags"]
    rc, out = _run(stats_main, ["--json", *until])
    d = orjson.loads(out)
    assert d["messages"] == 1 and d["deliveries"]["attempts"] == 2
    assert d["period"]["first"] == "2025-12-01T00:00:00.000000000Z"  # not its end
    # a mail begun after the period is still left out
    rc, out = _run(track_main, ["--utc", "--until", "2025-11-30T23:59:00Z", str(send)])
    assert rc == 1 and out == ""


SEND = "/var/log/qmail/send"


def _in(lines: list[tuple[float, str]], first_offset: int = 0) -> list[dict[str, Any]]:
    """Lines as the daemon reads them from the send log's ``current``."""
    parser = LineParser(source=f"{SEND}/current", file_id="5e2d5e2d5e2d5e2d")
    return [parser.parse(f"{_lab(t)} {text}\n".encode(), first_offset + i * 100).to_dict()
            for i, (t, text) in enumerate(lines)]


def _gap(first_s: float, last_s: float) -> dict[str, Any]:
    """The daemon's record of an archive multilog deleted (its n limit) unread."""
    def ns(s: float) -> int:
        return EPOCH * 10**9 + int(s * 10**9)
    g = Gap(SEND, "@400000006930e1a000000000.s", 99999, True, ns(first_s), ns(last_s),
            "deleted by multilog (its n limit) before it was read", (SEND, {}))
    return gap_record(g, "mx")


def test_a_delivery_whose_result_the_log_lost_is_retried_not_a_new_recipient() -> None:
    # The shipper was stopped while the send log rotated past multilog's n limit: the
    # lines lost held the result of delivery 2. Its retry (delivery 9) was taken for a
    # second copy of the address: a made-up recipient left pending, the mail "mixed"
    # though each of its recipients was delivered once
    before = [(0.0, "new msg 4711"),
              (0.001, "info msg 4711: bytes 4200 from <alice@example.org> qp 20001 uid 89"),
              (0.01, "starting delivery 1: msg 4711 to local bob@example.org"),
              (0.02, "delivery 1: success: did_0+0+1/"),
              (1.0, "starting delivery 2: msg 4711 to remote sub@slow.example"),
              # listed twice, both delivered at once (qmail keeps duplicates)
              (1.1, "starting delivery 3: msg 4711 to remote twice@slow.example"),
              (1.2, "starting delivery 4: msg 4711 to remote twice@slow.example")]
    after = [(3600.0, "starting delivery 9: msg 4711 to remote sub@slow.example"),
             (3600.1, "starting delivery 10: msg 4711 to remote twice@slow.example"),
             (3600.2, "starting delivery 11: msg 4711 to remote twice@slow.example"),
             (3601.0, "delivery 9: success: 192.0.2.9_accepted_message./Remote_host_said:_250_ok/"),
             (3601.1, "delivery 10: success: 192.0.2.9_accepted_message./Remote_host_said:_250_ok/"),
             (3601.2, "delivery 11: success: 192.0.2.9_accepted_message./Remote_host_said:_250_ok/"),
             (3601.3, "end msg 4711")]
    for restart in (False, True):
        c = Correlator()
        out = c.feed(_in(before))
        out += c.feed([_gap(2.0, 3000.0)])
        if restart:  # the state saved and loaded across the restart of the shipper
            c = Correlator.from_state(orjson.loads(orjson.dumps(c.to_state())))
        out += c.feed(_in(after, first_offset=100_000))
        (mail,) = [o for o in out if o["event"] == "mail"]
        assert mail["flags"] == ["log_gap"]
        got = [(r["rcpt_to"], r["result"], [a["result"] or ("lost" if a.get("lost") else None)
                                           for a in r["attempts"]])
               for r in mail["recipients"]]
        assert got == [("bob@example.org", "success", ["success"]),
                       ("sub@slow.example", "success", ["lost", "success"]),
                       ("twice@slow.example", "success", ["lost", "success"]),
                       ("twice@slow.example", "success", ["lost", "success"])]
        assert mail["result"] == "success" and mail["n_recipients"] == 4
        assert "result lost (lines of the log lost)" in render_text(mail, utc=True)


def test_a_second_copy_started_after_a_gap_is_still_a_copy() -> None:
    # the same address delivered twice at once after the lines lost: two copies, as
    # without a gap (only a delivery on before the lines lost may have lost its result)
    c = Correlator()
    c.feed(_in([(0.0, "new msg 4712"),
                (0.001, "info msg 4712: bytes 4200 from <alice@example.org> qp 20002 uid 89")]))
    c.feed([_gap(0.5, 1.0)])
    out = c.feed(_in([(2.0, "starting delivery 1: msg 4712 to remote twice@slow.example"),
                      (2.1, "starting delivery 2: msg 4712 to remote twice@slow.example"),
                      (3.0, "delivery 1: success: 192.0.2.9_accepted_message./Remote_host_said:_250_ok/"),
                      (3.1, "delivery 2: success: 192.0.2.9_accepted_message./Remote_host_said:_250_ok/"),
                      (3.2, "end msg 4712")], first_offset=100_000))
    (mail,) = [o for o in out if o["event"] == "mail"]
    assert [(r["rcpt_to"], r["n_attempts"]) for r in mail["recipients"]] == [
        ("twice@slow.example", 1), ("twice@slow.example", 1)]


def test_track_to_one_subscriber_of_a_list_post_shows_that_one(tmp_path: Path) -> None:
    # an ezmlm post (VERP sender) to 300 subscribers: "--to sub123@" printed all 300
    # with their attempts (5,000 subscribers: 10,000 lines to look through for one)
    lines = [(0.0, "new msg 6000"),
             (0.001, "info msg 6000: bytes 4200 from <list-return-7-@lists.example.org-@[]> "
                     "qp 20007 uid 89")]
    for i in range(1, 301):
        lines.append((i * 0.01, f"starting delivery {i}: msg 6000 to remote sub{i}@far.example"))
    for i in range(1, 301):
        lines.append((5 + i * 0.01, f"delivery {i}: failure: {FAIL}" if i % 100 == 0 else
                      f"delivery {i}: success: 192.0.2.5_accepted_message./Remote_host_said:_250_ok/"))
    send = _logdir(tmp_path / "send", [*lines, (9.0, "bounce msg 6000 qp 20008"),
                                       (9.001, "end msg 6000")])
    rc, out = _run(track_main, ["--utc", "--to", "sub123@", str(send)])
    assert rc == 0
    assert [ln.split()[:2] for ln in out.splitlines() if ln.startswith("  to ")] == [
        ["to", "<sub123@far.example>"]]
    assert "  and      299 other recipients (3 failure, 296 success; --json lists them)\n" in out
    rc, out = _run(track_main, ["--utc", "--msgid", "6000", str(send)])  # not asked: all
    assert sum(ln.startswith("  to ") for ln in out.splitlines()) == 300
    rc, out = _run(track_main, ["--json", "--to", "sub123@", str(send)])
    assert orjson.loads(out)["n_recipients"] == 300


def _splogger(lines: list[tuple[float, str]]) -> str:
    """qmail-send lines as splogger hands them to syslog (formats.md §4.2: the syslog
    stamp, the host, ``qmail:``, then the accustamp time)."""
    out = []
    for t, text in lines:
        tm = time.gmtime(int(EPOCH + t))
        out.append(f"{time.strftime('%b', tm)} {tm.tm_mday:2d} {time.strftime('%H:%M:%S', tm)} mx "
                   f"qmail: {EPOCH + t:.6f} {text}\n")
    return "".join(out)


def test_a_result_line_syslog_dropped_is_not_a_second_recipient(tmp_path: Path) -> None:
    # qmail logging through splogger to a syslog that rate-limits drops lines with no
    # gap said: the deferral of delivery 2 is gone. Its retry 10 minutes later was taken
    # for a second copy of the address, and every further lost result made another
    # (160 mails of 600 had recipients made up at 1 % of lines lost)
    lines = [(0.0, "new msg 4711"),
             (0.001, "info msg 4711: bytes 4200 from <alice@example.org> qp 20001 uid 89"),
             (1.0, "starting delivery 2: msg 4711 to remote sub@slow.example"),
             # (31.0 "delivery 2: deferral: ..." dropped by syslog)
             (600.0, "starting delivery 9: msg 4711 to remote sub@slow.example"),
             (630.0, f"delivery 9: deferral: {DEFER}"),
             (2000.0, "starting delivery 17: msg 4711 to remote sub@slow.example"),
             (2001.0, "delivery 17: success: 192.0.2.9_accepted_message./Remote_host_said:_250_ok/"),
             (2001.1, "end msg 4711")]
    log = tmp_path / "mail.log"
    log.write_text(_splogger(lines))
    rc, out = _run(track_main, ["--json", "--utc", "--year", "2025", str(log)])
    assert rc == 0
    mail = orjson.loads(out)
    assert [(r["rcpt_to"], r["result"], r["n_attempts"]) for r in mail["recipients"]] == [
        ("sub@slow.example", "success", 3)]
    assert [a.get("lost") for a in mail["recipients"][0]["attempts"]] == [True, None, None]
    assert mail["result"] == "success" and (mail["n_success"], mail["n_deferral"]) == (1, 1)


def test_a_copy_of_an_address_listed_twice_begun_apart_is_still_a_copy(tmp_path: Path) -> None:
    # the address is listed twice and qmail-send's remote slots were all taken: its
    # second copy begins 40 s after the first, still on. Taken for the first's retry at
    # first, it is a copy of its own once the first's result comes
    ok = "success: 192.0.2.9_accepted_message./Remote_host_said:_250_ok/"
    send = _logdir(tmp_path / "send", [
        (0.0, "new msg 4713"),
        (0.001, "info msg 4713: bytes 4200 from <alice@example.org> qp 20003 uid 89"),
        (0.01, "starting delivery 1: msg 4713 to remote twice@slow.example"),
        (40.0, "starting delivery 5: msg 4713 to remote twice@slow.example"),
        (60.0, f"delivery 1: {ok}"),
        (61.0, f"delivery 5: {ok}"),
        (61.1, "end msg 4713")])
    rc, out = _run(track_main, ["--json", str(send)])
    mail = orjson.loads(out)
    assert sorted((r["rcpt_to"], r["result"], [a["delivery"] for a in r["attempts"]])
                  for r in mail["recipients"]) == [("twice@slow.example", "success", [1]),
                                                   ("twice@slow.example", "success", [5])]
    assert not any(a.get("lost") for r in mail["recipients"] for a in r["attempts"])
    assert (mail["n_recipients"], mail["n_success"], mail["result"]) == (2, 2, "success")
    rc, out = _run(stats_main, ["--json", str(send)])
    d = orjson.loads(out)
    assert d["recipient_outcomes"] == {"success": 2} and d["untracked_deliveries"] == 0


def test_a_session_of_two_messages_does_not_give_all_its_recipients_the_last_sender(
        tmp_path: Path) -> None:
    # recordio (formats.md §8): one connection queues a list's message (a, b; nobody
    # refused), then another sender's (c). "accepted <a> <b> <c> from <other@…>"
    # said a and b came from the second sender
    p = 4242
    smtpd = _logdir(tmp_path / "smtpd", [
        (0.0, f"tcpserver: pid {p} from 198.51.100.7"),
        (0.001, f"tcpserver: ok {p} mx.example.org:192.0.2.1:25 client.example.net:198.51.100.7::51234"),
        (0.01, f"{p} > 220 mx.example.org ESMTP "), (0.02, f"{p} < EHLO client.example.net "),
        (0.03, f"{p} > 250-mx.example.org "), (0.031, f"{p} > 250 PIPELINING "),
        (0.04, f"{p} < MAIL FROM:<list@lists.example.net> "), (0.041, f"{p} > 250 ok "),
        (0.05, f"{p} < RCPT TO:<a@example.org> "), (0.051, f"{p} > 250 ok "),
        (0.06, f"{p} < RCPT TO:<nobody@elsewhere.example> "),
        (0.061, f"{p} > 553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1) "),
        (0.07, f"{p} < RCPT TO:<b@example.org> "), (0.071, f"{p} > 250 ok "),
        (0.08, f"{p} < DATA "), (0.081, f"{p} > 354 go ahead "), (0.2, f"{p} < . "),
        (0.3, f"{p} > 250 ok 1764547200 qp 5001 "),
        (0.31, f"{p} < MAIL FROM:<other@lists.example.net> "), (0.311, f"{p} > 250 ok "),
        (0.32, f"{p} < RCPT TO:<c@example.org> "), (0.321, f"{p} > 250 ok "),
        (0.33, f"{p} < DATA "), (0.331, f"{p} > 354 go ahead "), (0.4, f"{p} < . "),
        (0.5, f"{p} > 250 ok 1764547200 qp 5002 "),
        (0.51, f"{p} < QUIT "), (0.52, f"{p} > 221 mx.example.org "), (0.53, f"{p} > [EOF]"),
        (0.54, f"tcpserver: end {p} status 0")])
    rc, out = _run(track_main, ["--utc", "--to", "nobody", str(smtpd)])
    assert rc == 0
    (accepted,) = [ln for ln in out.splitlines() if ln.startswith("  accepted ")]
    assert accepted == ("  accepted <a@example.org> <b@example.org> <c@example.org> "
                        "(of 2 messages; the last from <other@lists.example.net>)")
