"""Faults of ``shipper track`` / ``stats`` / ``parse`` a tester found (2026-11-30), each
pinned: two servers' send logs in one run, a session's mail found by --msgid, times
shown in local time, delays of mails begun before the input, a parser per input,
the exit codes and what is said with them, --host/--server, --tai, a late verdict.

Lines are qmail-send's, tcpserver's and recordio's own forms, with multilog labels,
read through the real reader and LineParser (the CLI) or LineParser (the correlator).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from shipper.parse import LineParser
from shipper.track.cli import stats_main, track_main
from shipper.track.correlator import Correlator
from shipper.track.report import render_text

EPOCH = 1_714_557_600  # 2024-05-01T10:00:00Z


def _lab(sec: float, tai_leap: bool = False) -> str:
    secs, frac = divmod(EPOCH * 10**9 + round(sec * 10**9), 10**9)
    return f"@{secs + 2**62 + (37 if tai_leap else 10):016x}{frac:08x}"


def _logdir(d: Path, lines: list[tuple[float, str]], name: str = "current") -> Path:
    d.mkdir(exist_ok=True)
    (d / name).write_text("".join(f"{_lab(t)} {text}\n" for t, text in lines))
    return d


def run(fn, argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    rc = fn(argv, stdout=buf)
    return rc, buf.getvalue()


def _jsons(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in text.splitlines()]


def _send(rcpt: str, sender: str = "alice@example.com", qp: int = 5000) -> list[tuple[float, str]]:
    """msg 1000, delivered to ``rcpt`` after a deferral, bounced; its bounce is msg 1001."""
    return [(0.1, "new msg 1000"), (0.101, f"info msg 1000: bytes 2000 from <{sender}> qp {qp} uid 89"),
            (0.11, f"starting delivery 1: msg 1000 to remote {rcpt}"),
            (1.0, "delivery 1: deferral: Connected_to_192.0.2.2_but_greeting_failed./"),
            (1.1, "starting delivery 2: msg 1000 to local gone@here.test"),
            (1.2, "delivery 2: failure: Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/"),
            (1.3, "bounce msg 1000 qp 6000"),
            (1.31, "new msg 1001"), (1.311, "info msg 1001: bytes 2500 from <> qp 6000 uid 89"),
            (1.32, f"starting delivery 3: msg 1001 to local {sender}"),
            (1.4, "delivery 3: success: did_0+0+1/"), (1.41, "end msg 1001"),
            (600.0, f"starting delivery 4: msg 1000 to remote {rcpt}"),
            (601.0, "delivery 4: success: 192.0.2.2_accepted_message./Remote_host_said:_250_ok/"),
            (601.1, "end msg 1000")]


# -- 1: two servers' send logs ------------------------------------------------------------

def test_two_servers_send_logs_are_two_sets_of_mails(tmp_path: Path) -> None:
    """``track mx1 mx2``: the same msg numbers, delivery ids and qps in both; they were
    mixed into one set (msg 1000 incomplete: id_reused, attempts of the other's)."""
    mx1 = _logdir(tmp_path / "mx1", _send("slow@remote1.test"))
    mx2 = _logdir(tmp_path / "mx2", _send("slow@remote2.test", sender="carol@other.test"))
    rc, out = run(track_main, [str(mx1), str(mx2), "--json"])
    assert rc == 0
    mails = _jsons(out)
    assert sorted((m["msg"], m["mail_from"]) for m in mails) == [
        (1000, "alice@example.com"), (1000, "carol@other.test"), (1001, ""), (1001, "")]
    assert all(m["flags"] == [] for m in mails)
    by = {(m["msg"], m["mail_from"]): m for m in mails}
    for sender, rcpt in (("alice@example.com", "slow@remote1.test"), ("carol@other.test", "slow@remote2.test")):
        m = by[(1000, sender)]
        assert [(r["rcpt_to"], r["result"], r["n_attempts"]) for r in m["recipients"]] == [
            (rcpt, "success", 2), ("gone@here.test", "failure", 1)]
    # each bounce is its own server's
    assert sorted(b["recipients"][0]["rcpt_to"] for b in mails if b["msg"] == 1001) == [
        "alice@example.com", "carol@other.test"]
    assert all(b["bounce_of"]["event_id"] in {m["event_id"] for m in mails} for b in mails
               if b["msg"] == 1001)
    rc, out = run(stats_main, [str(mx1), str(mx2), "--json"])
    st = orjson.loads(out)
    assert (st["messages"], st["completed"], st["incomplete"], st["partial"]) == (4, 4, 0, 0)


def test_one_servers_send_log_split_across_an_archive_and_current_stays_one(tmp_path: Path) -> None:
    lines = _send("slow@remote1.test")
    d = _logdir(tmp_path / "send", lines[:6], name="@400000006632129f00000000.s")
    _logdir(d, lines[6:])
    for argv in ([str(d)], [str(d / "@400000006632129f00000000.s"), str(d / "current")]):
        rc, out = run(track_main, [*argv, "--json"])
        assert rc == 0
        mails = _jsons(out)
        assert sorted(m["msg"] for m in mails) == [1000, 1001] and all(m["flags"] == [] for m in mails)


def _recs(source: str, lines: list[tuple[float, str]], fid: str) -> list[dict[str, Any]]:
    p = LineParser(source=source, file_id=fid)
    return [p.parse(f"{_lab(t)} {x}\n".encode(), i * 100).to_dict() for i, (t, x) in enumerate(lines)]


def _smtpd(qp: int, t: float = 0.0, ip: str = "198.51.100.5") -> list[tuple[float, str]]:
    return [(t, f"tcpserver: pid 7001 from {ip}"),
            (t + 0.001, f"tcpserver: ok 7001 mx:192.0.2.10:25 :{ip}::40000"),
            (t + 0.002, "7001 < MAIL FROM:<alice@example.com>"), (t + 0.003, "7001 > 250 ok"),
            (t + 0.004, "7001 < DATA"), (t + 0.005, "7001 > 354 go ahead"),
            (t + 0.09, f"7001 > 250 ok 1714557601 qp {qp}"), (t + 0.2, "tcpserver: end 7001 status 0")]


def test_a_servers_smtpd_log_still_links_to_its_mails_and_the_daemons_state_loads() -> None:
    """Hostless lines: the send log is its input; a session (keyed by host) is linked to
    the mail of that qp with the nearest birth. A state saved when hostless mails were
    keyed by the empty host goes on: its mails' next lines find them."""
    send = _recs("/var/log/qmail/send/current", _send("slow@remote1.test"), "a" * 16)
    smtpd = _recs("/var/log/qmail/smtpd/current", _smtpd(5000), "b" * 16)
    c = Correlator()
    out = c.feed(sorted(send + smtpd, key=lambda r: r["time_unix_ns"])) + c.finish()
    (m,) = [o for o in out if o["event"] == "mail" and o["msg"] == 1000]
    assert m["session"]["remote_ip"] == "198.51.100.5" and m["session"]["link"] == "qp"
    # the state of a shipper before: keys of the empty host ("\0queue", "\0msg")
    c = Correlator()
    c.feed(send[:6])
    state = orjson.loads(orjson.dumps(c.to_state()))
    q = state["qmail"]
    log = "\x01/var/log/qmail/send"

    def old(k: str) -> str:
        assert k.startswith(log)
        return k[len(log):]
    q["mails"] = [[old(k), m] for k, m in q["mails"]]
    q["queues"] = {old(k): {**v, "dels": {d: [old(r[0]), r[1]] for d, r in v["dels"].items()}}
                   for k, v in q["queues"].items()}
    q["by_qp"] = {old(k): old(v) for k, v in q["by_qp"].items()}
    assert list(q["by_qp"]) == ["\x005000"]
    c2 = Correlator.from_state(state)
    out = c2.feed(send[6:]) + c2.finish()
    m = [o for o in out if o["event"] == "mail" and o["msg"] == 1000][0]
    assert m["flags"] == [] and m["n_success"] == 1 and m["bounce_qp"] == 6000
    assert c2.qmail.orphans == 0
    assert [o["bounce_of"]["msg"] for o in out if o["msg"] == 1001] == [1000]


# -- 3, 10: a mail that ended before its reply ------------------------------------------------

REUSE_SEND = [(0.990, "new msg 1000"), (0.991, "info msg 1000: bytes 100 from <first@a.example> qp 5000 uid 89"),
              (0.992, "starting delivery 1: msg 1000 to local u1@here.test"),
              (0.995, "delivery 1: success: did_0+0+1/"), (0.996, "end msg 1000"),
              (1200.990, "new msg 1000"),
              (1200.991, "info msg 1000: bytes 200 from <second@b.example> qp 5000 uid 89"),
              (1200.992, "starting delivery 2: msg 1000 to local u2@here.test"),
              (1200.995, "delivery 2: success: did_0+0+1/"), (1200.996, "end msg 1000")]


def _reuse_smtpd(late: bool) -> list[tuple[float, str]]:
    """Two connections, each queueing a msg 1000 that ends before its "250 ok … qp";
    the second's reply logged after tcpserver's end when ``late``."""
    out = []
    for t, ip, who in ((0.0, "198.51.100.5", "first@a.example"), (1200.0, "203.0.113.9", "second@b.example")):
        out += [(t + 0.001, f"tcpserver: pid 7001 from {ip}"),
                (t + 0.002, f"tcpserver: ok 7001 mx:192.0.2.10:25 c.example:{ip}::40000"),
                (t + 0.03, f"7001 < MAIL FROM:<{who}>"), (t + 0.031, "7001 > 250 ok"),
                (t + 0.05, f"7001 < RCPT TO:<u{1 if t == 0 else 2}@here.test>"), (t + 0.051, "7001 > 250 ok"),
                (t + 0.07, "7001 < DATA"), (t + 0.071, "7001 > 354 go ahead")]
        if late and t:
            out += [(t + 1.0, "tcpserver: end 7001 status 0"), (t + 1.5, "7001 > 250 ok 1714558801 qp 5000")]
        else:
            out += [(t + 1.0, "7001 > 250 ok 1714557601 qp 5000"), (t + 1.1, "tcpserver: end 7001 status 0")]
    return out


def test_msgid_shows_the_client_of_a_mail_that_ended_before_its_reply(tmp_path: Path) -> None:
    """--msgid looked only at a summary's own msg: the session that names the mail (the
    mail, out first, names none) was not shown, --to and --from showed it."""
    send = _logdir(tmp_path / "send", REUSE_SEND)
    smtpd = _logdir(tmp_path / "smtpd", _reuse_smtpd(late=False))
    rc, text = run(track_main, [str(send), str(smtpd), "--msgid", "1000", "--utc"])
    assert rc == 0
    assert "client   c.example[198.51.100.5]:40000" in text
    assert "client   c.example[203.0.113.9]:40000" in text
    assert text.count("queued   msg 1000 qp 5000") == 2


def test_a_reply_logged_after_tcpservers_end_links_the_mail_that_ended_before_it(tmp_path: Path) -> None:
    """The second session's "250 ok … qp" after its end, its mail out before it: the
    session was out at its end (qps [], mails []) and the reply linked nothing."""
    send = _logdir(tmp_path / "send", REUSE_SEND)
    smtpd = _logdir(tmp_path / "smtpd", _reuse_smtpd(late=True))
    rc, out = run(track_main, [str(send), str(smtpd), "--json", "--sessions"])
    assert rc == 0
    sessions = [r for r in _jsons(out) if r["event"] == "smtp_session"]
    assert [(s["remote_ip"], s["qps"], [m["msg"] for m in s["mails"]], s["flags"]) for s in sessions] == [
        ("198.51.100.5", [5000], [1000], []), ("203.0.113.9", [5000], [1000], [])]
    # complete, at its end (not at the reply)
    assert sessions[1]["time_unix_ns"] == (EPOCH + 1201) * 10**9
    rc, text = run(track_main, [str(send), str(smtpd), "--to", "u2@here.test"])
    assert "client   c.example[203.0.113.9]:40000" in text


def test_a_session_held_for_its_verdict_goes_out_when_it_will_not_come() -> None:
    """Held past its end for a DATA verdict: out (complete, at its end) once a later
    line of its log is past end_grace_s, at a flush, at the end, and in the state."""
    lines = _reuse_smtpd(late=True)[10:20]  # the second: ends in DATA, no reply
    assert lines[-1][1].startswith("7001 > 250 ok") and lines[-2][1].startswith("tcpserver: end")
    recs = _recs("/var/log/qmail/smtpd/current", [*lines[:-1], (1300.0, "tcpserver: pid 7002 from 192.0.2.7")],
                 "c" * 16)
    c = Correlator()
    out = c.feed(recs[:9])
    assert out == [] and len(c.sessions.ending) == 1
    c2 = Correlator.from_state(orjson.loads(orjson.dumps(c.to_state())))  # a restart
    for corr in (c, c2):
        out = corr.feed(recs[9:])
        (s,) = out
        assert s["flags"] == [] and s["time_unix_ns"] == (EPOCH + 1201) * 10**9
        assert not corr.sessions.ending
    c = Correlator()
    c.feed(recs[:9])
    (s,) = c.finish()
    assert s["flags"] == [] and s["time_unix_ns"] == (EPOCH + 1201) * 10**9


# -- 4: local time shown -----------------------------------------------------------------

def test_track_shows_local_time_with_its_offset_and_utc_with_utc(tmp_path: Path, berlin) -> None:
    """tai64nlocal's Berlin 12:00 was shown 10:00 (UTC, unsaid), --since read as local."""
    d = _logdir(tmp_path / "send", _send("slow@remote1.test"))
    rc, text = run(track_main, [str(d), "--msgid", "1001", "--since", "2024-05-01 12:00"])
    assert rc == 0
    assert "queued   2024-05-01 12:00:01.311+02:00   done 2024-05-01 12:00:01.410+02:00" in text
    rc, text = run(track_main, [str(d), "--msgid", "1001", "--utc"])
    assert "queued   2024-05-01 10:00:01.311Z   done 2024-05-01 10:00:01.410Z" in text
    # tai64nlocal's output: read as local time and shown as such
    local = tmp_path / "s1.local"
    local.write_text("2024-05-01 12:00:01.311000000 new msg 1001\n"
                     "2024-05-01 12:00:01.410000000 end msg 1001\n")
    rc, text = run(track_main, [str(local)])
    assert "done 2024-05-01 12:00:01.410+02:00" in text


# -- 5, 7, 8: a mail begun before the input; one still open ---------------------------------

def test_a_mail_begun_before_the_input_has_no_delay_and_stats_leave_it_out(tmp_path: Path) -> None:
    """The delay was measured from its first line seen (9m 58s, delay_s 598.9 with birth
    null), and counted in the stats' ddelay; its bounce said "(qp None)"."""
    d = _logdir(tmp_path / "send", _send("slow@remote1.test")[2:])  # from its first delivery
    rc, out = run(track_main, [str(d), "--json"])
    by = {m["msg"]: m for m in _jsons(out)}
    m = by[1000]
    assert m["flags"] == ["partial"] and m["birth_unix_ns"] is None
    assert [r["delay_s"] for r in m["recipients"]] == [None, None]
    assert by[1001]["recipients"][0]["delay_s"] == pytest.approx(0.089)
    rc, text = run(track_main, [str(d), "--utc"])
    assert "<slow@remote1.test> remote SUCCESS via 192.0.2.2 (2 attempts)\n" in text
    assert "  bounce of msg 1000\n" in text and "None" not in text
    rc, out = run(stats_main, [str(d), "--json"])
    st = orjson.loads(out)
    assert st["delay_s"]["count"] == 1 and st["delay_s"]["max"] == pytest.approx(0.089)
    assert st["delay_unknown"] == 1
    rc, text = run(stats_main, [str(d)])
    assert "successes of mails begun before the input: delay unknown  1" in text


def test_an_incomplete_mail_says_when_it_was_last_seen_not_done(tmp_path: Path) -> None:
    d = _logdir(tmp_path / "send", _send("slow@remote1.test")[:-3])  # msg 1000 still queued
    rc, text = run(track_main, [str(d), "--msgid", "1000", "--utc"])
    first = text.split("\n\n")[0]
    assert "queued   2024-05-01 10:00:00.101Z   last seen 2024-05-01 10:00:01.300Z\n" in first
    assert "done" not in first
    rc, text = run(track_main, [str(d), "--msgid", "1001", "--utc"])
    assert "   done 2024-05-01 10:00:01.410Z" in text


# -- 9: stats --since/--until and the untracked deliveries ----------------------------------

def test_stats_counts_untracked_deliveries_in_its_period_only(tmp_path: Path) -> None:
    d = _logdir(tmp_path / "send", [(0.1, "delivery 7: success: did_0+0+1/"),
                                    (700.0, "delivery 8: success: did_0+0+1/")])
    for since, n in ((None, 2), ("2024-05-01T10:05:00Z", 1), ("2024-05-01T10:20:00Z", 0)):
        rc, out = run(stats_main, [str(d), "--json", *(["--since", since] if since else [])])
        assert orjson.loads(out)["untracked_deliveries"] == n
    rc, out = run(stats_main, [str(d), "--json", "--until", "2024-05-01T10:05:00Z"])
    assert orjson.loads(out)["untracked_deliveries"] == 1


# -- 11: exit codes and what is said -------------------------------------------------------

def test_nothing_matched_and_an_empty_directory_are_said(tmp_path: Path, capsys) -> None:
    d = _logdir(tmp_path / "send", _send("slow@remote1.test"))
    rc, out = run(track_main, [str(d), "--to", "nobody@nowhere.test"])
    assert (rc, out) == (1, "")
    assert capsys.readouterr().err == "shipper track: no mail or session matched\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    for fn, prog in ((track_main, "shipper track"), (stats_main, "shipper stats")):
        rc, out = run(fn, [str(empty)])
        assert (rc, out) == (2, "")
        assert capsys.readouterr().err == (f"{prog}: {empty}: no log files in it, and not a multilog "
                                           "directory (no current, no @ files)\n")


@pytest.mark.parametrize("command", ["parse", "track", "stats"])
def test_a_missing_path_is_a_usage_error_in_every_command(tmp_path: Path, command: str) -> None:
    r = subprocess.run([sys.executable, "-m", "shipper", command, str(tmp_path / "missing")],
                       capture_output=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.decode().endswith(f"{tmp_path / 'missing'}: no such file or directory\n")


# -- 12: --host is the client's or relay's; --server the log's -------------------------------

def test_host_matches_clients_and_relays_and_server_the_logs_host(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    log.write_text("May  1 10:00:00 mx1 qmail: 1714557600.100000 new msg 1000\n"
                   "May  1 10:00:00 mx1 qmail: 1714557600.101000 info msg 1000: bytes 2000 "
                   "from <a@example.com> qp 5000 uid 89\n"
                   "May  1 10:00:00 mx1 qmail: 1714557600.110000 starting delivery 1: msg 1000 "
                   "to remote b@remote.test\n"
                   "May  1 10:00:01 mx1 qmail: 1714557601.000000 delivery 1: success: "
                   "192.0.2.2_accepted_message./Remote_host_said:_250_ok/\n"
                   "May  1 10:00:01 mx1 qmail: 1714557601.100000 end msg 1000\n")
    assert run(track_main, [str(log), "--year", "2024", "--host", "mx1"])[0] == 1
    assert run(track_main, [str(log), "--year", "2024", "--host", "192.0.2.2"])[0] == 0
    assert run(track_main, [str(log), "--year", "2024", "--server", "mx1"])[0] == 0
    assert run(track_main, [str(log), "--year", "2024", "--server", "mx2"])[0] == 1


# -- 13: --tai ---------------------------------------------------------------------------

def test_track_and_stats_read_true_tai_labels_with_tai(tmp_path: Path) -> None:
    d = tmp_path / "send"
    d.mkdir()
    (d / "current").write_text("".join(f"{_lab(t, tai_leap=True)} {x}\n"
                                       for t, x in _send("slow@remote1.test")))
    rc, out = run(track_main, [str(d), "--json", "--msgid", "1001", "--tai"])
    (m,) = _jsons(out)
    assert m["birth_unix_ns"] == (EPOCH * 10**9 + 1_311_000_000) and m["time_source"] == "tai64n_tai"
    rc, out = run(track_main, [str(d), "--json", "--msgid", "1001"])
    assert _jsons(out)[0]["birth_unix_ns"] == (EPOCH + 27) * 10**9 + 1_311_000_000
    rc, out = run(stats_main, [str(d), "--json", "--tai"])
    assert orjson.loads(out)["period"]["first"] == "2024-05-01T10:00:00.101000000Z"


# -- cosmetic: TLS -----------------------------------------------------------------------

def test_a_session_with_tls_of_unknown_cipher_says_tls_once() -> None:
    rec = {"event": "smtp_session", "server": "sslserver", "conn_pid": 1, "remote_ip": "192.0.2.7",
           "proto": "ESMTP", "tls": "TLS", "start_unix_ns": 0, "time_unix_ns": 0}
    assert "[192.0.2.7] ESMTP TLS\n" in render_text(rec)
    assert "ESMTP TLS_AES_256_GCM_SHA384\n" in render_text({**rec, "tls": "TLS_AES_256_GCM_SHA384"})
    assert "ESMTP TLS ECDHE-RSA-AES256-GCM-SHA384\n" in render_text(
        {**rec, "tls": "ECDHE-RSA-AES256-GCM-SHA384"})
    assert "ESMTP STARTTLS\n" in render_text({**rec, "tls": "STARTTLS"})
