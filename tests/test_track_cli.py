"""``shipper track`` / ``shipper stats`` over real inputs: fixture files, a plain
directory, gzip, and multilog directories written by the real ``multilog t``."""

from __future__ import annotations

import gzip
import io
import subprocess
from pathlib import Path

import orjson

from shipper.track.cli import stats_main, track_main
from tests.conftest import require_binary

FIX = Path(__file__).parent / "fixtures" / "track"


def _texts(name: str) -> bytes:
    """A fixture's lines without their stamps (what the daemon wrote), source line dropped."""
    lines = (FIX / name).read_bytes().split(b"\n")[1:-1]
    return b"".join(ln.split(b" ", 1)[1] + b"\n" for ln in lines)


def _multilog(tmp: Path, name: str, data: bytes) -> Path:
    d = tmp / name
    subprocess.run([require_binary("multilog"), "t", str(d)], input=data, check=True, timeout=20)
    assert (d / "current").exists()
    return d


def run(fn, argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    rc = fn(argv, stdout=buf)
    return rc, buf.getvalue()


def test_track_across_two_real_multilog_dirs(tmp_path: Path) -> None:
    smtpd = _multilog(tmp_path, "smtpd", _texts("smtpd_recordio_ipv6.txt"))
    send = _multilog(tmp_path, "send", _texts("send_recordio_ipv6.txt"))
    rc, out = run(track_main, [str(send), str(smtpd), "--to", "bob@example.org", "--json"])
    assert rc == 0
    recs = [orjson.loads(ln) for ln in out.splitlines()]
    (mail,) = recs
    assert mail["event"] == "mail" and mail["msg"] == 777 and mail["mail_from"] == "Alice@example.net"
    assert mail["session"]["remote_ip"] == "2001:db8::25" and mail["session"]["link"] == "qp"
    assert mail["recipients"][0]["result"] == "success"
    assert mail["source"].endswith("send/current") and mail["time_source"] == "tai64n"
    # Text form: one block per mail.
    rc, text = run(track_main, [str(send), str(smtpd), "--from", "alice@"])
    assert rc == 0
    assert "mail msg 777" in text and "to       <bob@example.org> local SUCCESS" in text
    assert "client   client.example.net[2001:db8::25] ESMTP" in text
    # Rejections are sessions: the 553 and the rblsmtpd block are found by host.
    rc, text = run(track_main, [str(smtpd), "--host", "198.51.100.77"])
    assert rc == 0 and "result blocked" in text and "Deferred RBL 451" in text
    rc, _ = run(track_main, [str(send), "--to", "nobody-here@nowhere"])
    assert rc == 1


def test_track_files_dir_and_gzip(tmp_path: Path) -> None:
    gz = tmp_path / "bayour.log.gz"
    gz.write_bytes(gzip.compress((FIX / "bayour_perl_comments_qmail-send_accustamp.txt").read_bytes()))
    rc, out = run(track_main, [str(gz), "--to", "fjkdasljf@nocrew.org", "--json"])
    assert rc == 0
    (m,) = [orjson.loads(x) for x in out.splitlines()]
    assert m["size"] == 869 and m["bounce_qp"] == 24162 and m["recipients"][0]["smtp_code"] == 550
    rc, out = run(track_main, [str(FIX), "--msgid", "161214", "--json",
                               "--since", "2003-05-29T06:29:00Z", "--until", "1054189751"])
    assert rc == 0
    got = [orjson.loads(x) for x in out.splitlines()]
    assert sorted(m["size"] for m in got) == [830, 1676]
    rc, out = run(track_main, [str(FIX), "--search", "no_such_user", "--json"])
    # msg 100, then its bounce (300) and that bounce's double bounce (301)
    assert rc == 0 and [orjson.loads(x)["msg"] for x in out.splitlines()] == [100, 300, 301]


def test_stats_text_and_json(tmp_path: Path) -> None:
    rc, out = run(stats_main, [str(FIX / "qmail_lifecycle.txt"), "--json"])
    assert rc == 0
    d = orjson.loads(out)
    assert d["messages"] == 5 and d["bytes"] == 1000 + 2000 + 300 + 1500 + 1900
    assert d["recipients"] == 7
    assert d["deliveries"] == {"attempts": 9, "success": 4, "failure": 3, "deferral": 2,
                               "success_rate": 0.4444, "failure_rate": 0.3333,
                               "deferral_rate": 0.2222}
    assert d["recipient_outcomes"] == {"success": 4, "failure": 3}
    assert d["top_senders"][0] == {"sender": "a@x.org", "messages": 1, "bytes": 1000} or \
        {"sender": "a@x.org", "messages": 1, "bytes": 1000} in d["top_senders"]
    assert {"host": "@far.example", "count": 1} in d["deferrals_by_host"]
    assert {"host": "192.0.2.7", "count": 1} in d["deferrals_by_host"]
    # zoverall's figures, by hand from the lines: m lines for msgs 100, 200 (twice), 300,
    # 301; nk + nd = 1 + 1 + 3 + 1 + 1 recipients, + 2 deferrals of r1 = 9 tries
    # (delivery 5's success after the restart is of no attempt started in its epoch)
    assert (d["completed"], d["incomplete"], d["partial"]) == (5, 0, 0)
    assert d["completed_recipients"] == 7 and d["completed_attempts"] == 9
    assert d["bounces"] == {"queued": 2, "double_discarded": 0, "triple_discarded": 1}
    # ddelay is of successes only (zoverall's "Average ddelay per success"): 0.499995,
    # 1.099998, 0.099999 and 172801.000048 s; the three failures are no delivery
    assert d["delay_s"] == {"count": 4, "mean": 43200.675, "p50": 0.5, "p90": 172801.0,
                            "p95": 172801.0, "p99": 172801.0, "max": 172801.0, "exact": True}
    assert d["period"]["first"] == "2023-11-14T22:13:20.000002000Z"  # msg 100's birth, not an end
    rc, text = run(stats_main, [str(FIX / "qmail_lifecycle.txt"), str(FIX / "smtpd_recordio_ipv6.txt")])
    assert rc == 0
    assert "messages                      5" in text or "  messages" in text
    for title in ("Overall", "Delays (seconds)", "Top senders", "Failure reasons",
                  "Deferrals by remote host", "Rejection reasons (SMTP)"):
        assert title in text
    assert "Reject::RCPT::553" in text and "Deferred::RBL::451" in text


def test_stats_postfix_and_errors(tmp_path: Path) -> None:
    pmg = Path(__file__).parent / "fixtures" / "pmg-log-tracker" / "test_input_time_rfc3339_mixed"
    rc, out = run(stats_main, [str(pmg), "--json"])
    assert rc == 0
    d = orjson.loads(out)
    assert d["messages"] == 4 and d["bytes"] == 1902 + 44585 + 130922 + 129347
    assert d["recipient_outcomes"] == {"quarantined": 6, "success": 1}
    assert d["completed"] == 4 and d["completed_recipients"] == 7
    # the delays were empty for Postfix (its recipients have delay=, not delay_s):
    # ddelay is the one delivered recipient's delay=6.9 (the 6 quarantined are the
    # filter's verdict), xdelay each status=sent line's delays= c + d, by hand:
    # 0.79 0.83 2.34 2.34 4.05 4.05 6.9
    assert d["delay_s"] == {"count": 1, "mean": 6.9, "p50": 6.9, "p90": 6.9, "p95": 6.9,
                            "p99": 6.9, "max": 6.9, "exact": True}
    assert d["delivery_time_s"] == {"count": 7, "mean": 3.043, "p50": 2.34, "p90": 6.9,
                                    "p95": 6.9, "p99": 6.9, "max": 6.9, "exact": True}
    rc, _ = run(stats_main, [str(tmp_path / "missing")])
    assert rc == 2


def test_track_finds_a_refused_recipient_in_a_session_that_queued_other_mail(tmp_path: Path) -> None:
    """recordio's 553 for nobody@example.org, in a session that also queued a mail: the
    session is shown for --to and --search without --sessions (found in a review: only
    --sessions found it); a query its mail answers still shows the mail only."""
    f = tmp_path / "smtpd.log"
    f.write_bytes(b"".join(ln + b"\n" for ln in
                           (FIX / "smtpd_recordio_ipv6.txt").read_bytes().split(b"\n")[1:-1]))
    rc, out = run(track_main, [str(f), "--to", "nobody@example.org", "--json"])
    assert rc == 0, out
    (sess,) = [orjson.loads(x) for x in out.splitlines()]
    assert sess["event"] == "smtp_session" and sess["qps"]
    assert any(d.get("rcpt_to") == "nobody@example.org" and d["smtp_code"] == 553
               for d in sess["decisions"])
    rc, out = run(track_main, [str(f), "--search", "allowed rcpthosts", "--json"])
    assert rc == 0 and orjson.loads(out.splitlines()[0])["event"] == "smtp_session"
    rc, out = run(track_main, [str(f), "--to", "nobody@nowhere.example", "--json"])
    assert rc == 1 and out == ""


def test_track_shows_where_a_forwarded_mail_and_a_bounce_went(tmp_path: Path) -> None:
    from tests.test_track_qmail import _forward_lines
    log = tmp_path / "current"
    log.write_text("\n".join(_forward_lines(False)) + "\n")
    rc, text = run(track_main, [str(log), "--to", "guitar-tpj-regex@"])
    assert rc == 0
    # the local recipient's mail, then the copy its .qmail forwarded, which --to alone misses
    assert text.index("mail msg 706430") < text.index("mail msg 706431")
    assert "local SUCCESS after 0.9s, forwarded: copy qp 31067 msg 706431" in text
    assert "forward of msg 706430 (qp 31064) to <guitar-tpj-regex@plover.com>" in text
    assert "<tpj@example.org> remote SUCCESS via 192.0.2.7" in text
    # a bounce is followed the same way (notqmail's TEST.deliver: msg 53's bounce is msg 54)
    rc, out = run(track_main, [str(FIX / "notqmail_TEST.deliver.txt"), "--to", "nonexistent@",
                               "--json"])
    recs = [orjson.loads(ln) for ln in out.splitlines()]
    assert rc == 0 and [r["msg"] for r in recs] == [53, 54]
    assert recs[1]["bounce_of"]["event_id"] == recs[0]["event_id"]


def test_a_truncated_archive_is_said_and_what_was_read_of_it_counts(tmp_path: Path, capsys) -> None:
    """Found probing track/stats on old logs: a .gz cut short (a copy that ran out of
    disk) ended the whole run with exit 2 and no summary at all, not even those of the
    intact inputs; and none of its own lines counted (a decompressor's read(1 MiB)
    dropped what it had decoded when the stream ended early)."""
    gz = tmp_path / "bayour.log.gz"
    gz.write_bytes(gzip.compress((FIX / "bayour_perl_comments_qmail-send_accustamp.txt").read_bytes())[:-8])
    ok = FIX / "send_recordio_ipv6.txt"
    rc, out = run(track_main, [str(gz), str(ok), "--to", "fjkdasljf@nocrew.org", "--json"])
    assert rc == 2
    (m,) = [orjson.loads(x) for x in out.splitlines()]
    assert m["size"] == 869 and m["recipients"][0]["smtp_code"] == 550
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("shipper track: ") and gz.name in err[0]
    rc, out = run(stats_main, [str(ok), str(gz), "--json"])
    assert rc == 2
    d = orjson.loads(out)
    whole = orjson.loads(run(stats_main, [str(ok), str(FIX / "bayour_perl_comments_qmail-send_accustamp.txt"),
                                          "--json"])[1])
    assert d["messages"] == whole["messages"] == 5 and d["bytes"] == whole["bytes"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("shipper stats: ")


def test_track_a_delivery_line_multilog_cut_at_a_rotation(tmp_path: Path) -> None:
    """A delivery result longer than ~2000 bytes that multilog cut at a rotation: track
    saw the head only (the tail was a line of its own), and the delivery stayed pending."""
    multilog = require_binary("multilog")
    # (tai64nlocal stamps there: date and time)
    texts = [ln.split(b" ", 2)[2] for ln in (FIX / "fehcom_sqmail_logging_chapter.txt")
             .read_bytes().splitlines()[1:6]]
    # the remote's reply made long (a real one can be: a multi-line 5xx with a URL list)
    texts[3] = texts[3].replace(b"250_OK", b"250_OK_" + b"x" * 6000)
    d = tmp_path / "send"
    subprocess.run([multilog, "t", "s4096", "n99", str(d)], input=b"\n".join(texts) + b"\n",
                   check=True, timeout=30)
    assert len(list(d.glob("@*.s"))) >= 1
    rc, out = run(track_main, [str(d), "--msgid", "28857444", "--json"])
    assert rc == 0
    (m,) = [orjson.loads(x) for x in out.splitlines()]
    (r,) = m["recipients"]
    assert r["result"] == "success" and r["text"].endswith("x" * 100 + " id=1eW731-0004n7-G7")


def test_archives_named_in_any_order_are_read_in_the_directory_s_order(tmp_path: Path) -> None:
    """Found checking stats by hand on a 30,000-line corpus through real multilog (410
    archives): with the archives named in reverse order ($(ls -r dir/@*)), stats counted
    50 mails more, all incomplete. Inputs are merged by time, and lines of the same
    microsecond on both sides of a rotation (multilog stamps a burst alike) came in
    argument order, a delivery's result before its start. A directory named twice
    counted every mail twice."""
    d = tmp_path / "send"
    d.mkdir()
    texts = _texts("qmail_lifecycle.txt").splitlines(keepends=True)
    label = b"@400000006553f10000000000 "  # one microsecond for the whole burst
    names = ["@400000006553f1000a000000.s", "@400000006553f1000b000000.s", "current"]
    for k, name in enumerate(names):
        (d / name).write_bytes(b"".join(label + t for t in texts[k * 14:(k + 1) * 14]))
    rc, want = run(stats_main, [str(d), "--json"])
    assert rc == 0 and orjson.loads(want)["messages"] == 5
    for args in ([str(d / n) for n in reversed(names)], [str(d / names[2]), str(d / names[0]), str(d / names[1])],
                 [str(d), str(d)], [str(d), str(d / names[1])]):
        assert run(stats_main, [*args, "--json"]) == (0, want), args


def test_rotated_syslog_files_are_one_log_for_the_year(tmp_path: Path) -> None:
    """track/stats read each file named as an input of its own, the year of --year
    starting again in each: mail.log's January lines came a year early."""
    from shipper.reader import input_sets

    for n in ("mail.log", "mail.log.1", "mail.log.2.gz", "other.log"):
        (tmp_path / n).write_bytes(b"")
    sets = input_sets([str(tmp_path / n) for n in ("mail.log", "other.log", "mail.log.2.gz", "mail.log.1")])
    assert [[Path(f).name for f in st.files] for st in sets] == [["mail.log.2.gz", "mail.log.1", "mail.log"],
                                                              ["other.log"]]
    assert not any(st.multilog for st in sets)


def test_track_shows_a_forwarded_copy_that_completed_before_its_mail(tmp_path: Path) -> None:
    """The forwarding mail had another recipient still deferred: its summary came after
    the copy's, and track, following only mails already shown, left the copy out."""
    from tests.test_track_qmail import _COPY, _COPY_DELIVERY, _FORWARD
    parent = [ln for ln in _FORWARD.read_text().splitlines() if ln.startswith("@")]
    start_remote = "@400000003e38291035d359b0 starting delivery 190553: msg 706430 to remote slow@example.net"
    copy = [ln.replace("190553", "190554") for ln in _COPY + _COPY_DELIVERY]
    late = ["@400000003e3829200800000b delivery 190553: success: 192.0.2.9_accepted_message./"
            "Remote_host_said:_250_ok/",
            "@400000003e3829200800000c end msg 706430"]
    lines = sorted(parent[:-1] + [start_remote] + copy, key=lambda ln: ln[:25]) + late
    log = tmp_path / "current"
    log.write_text("\n".join(lines) + "\n")
    rc, out = run(track_main, [str(log), "--to", "guitar-tpj-regex@", "--json"])
    recs = [orjson.loads(ln) for ln in out.splitlines()]
    assert rc == 0 and [r["msg"] for r in recs] == [706430, 706431]
    assert recs[1]["forward_of"]["event_id"] == recs[0]["event_id"]


def test_track_shows_a_session_that_its_mail_does_not_name(tmp_path: Path) -> None:
    """A session that queued mail was hidden ("its mails are shown with the session
    inside"), also when no mail named it: a local delivery done within milliseconds
    (qmail-send's "end msg" stamped before recordio's "250 ok … qp 4250": the two logs'
    order is a race) or the send log not given. --host with the client's IP, or --to
    on the smtpd log, found nothing."""
    send = tmp_path / "send.log"
    smtpd = tmp_path / "smtpd.log"
    lines = (FIX / "send_recordio_ipv6.txt").read_text().splitlines()[1:]
    # the same message's lines, its delivery done 16 ms after its info msg (before the reply)
    send.write_text("\n".join(ln.replace("@40000000665b0d4a389fdb74", "@40000000665b0d4a309fdb74")
                              .replace("@40000000665b0d4a38be5ff4", "@40000000665b0d4a30be5ff4")
                              for ln in lines) + "\n")
    smtpd.write_bytes(b"".join(ln + b"\n" for ln in
                               (FIX / "smtpd_recordio_ipv6.txt").read_bytes().split(b"\n")[1:-1]))
    rc, out = run(track_main, [str(send), str(smtpd), "--host", "2001:db8::25", "--json"])
    assert rc == 0, out
    (sess,) = [orjson.loads(x) for x in out.splitlines()]
    assert sess["event"] == "smtp_session" and sess["remote_ip"] == "2001:db8::25"
    assert [m["msg"] for m in sess["mails"]] == [777]
    # --to: the mail, then where it came from
    rc, out = run(track_main, [str(send), str(smtpd), "--to", "bob@example.org", "--json"])
    recs = [orjson.loads(x) for x in out.splitlines()]
    assert rc == 0 and [r["event"] for r in recs] == ["mail", "smtp_session"]
    assert "session" not in recs[0] and recs[1]["mails"][0]["event_id"] == recs[0]["event_id"]
    # the original order (the reply first): the mail carries the session, shown alone,
    # also when it ends after the session did (delivered 6 s later, the session ends at 1 s)
    late = tmp_path / "late.log"
    late.write_text("\n".join(ln.replace("@40000000665b0d4a38", "@40000000665b0d5038")
                              for ln in lines) + "\n")
    for log in (FIX / "send_recordio_ipv6.txt", late):
        rc, out = run(track_main, [str(log), str(smtpd), "--host", "2001:db8::25", "--json"])
        (mail,) = [orjson.loads(x) for x in out.splitlines()]
        assert rc == 0 and mail["event"] == "mail", log
        assert mail["session"]["remote_ip"] == "2001:db8::25"
    assert mail["time"] == "2024-06-01T12:00:06.952000500Z"
    # the smtpd log alone: the session that queued mail for bob is the answer
    rc, text = run(track_main, [str(smtpd), "--to", "bob@example.org"])
    assert rc == 0 and text.count("session tcpserver pid 4242") == 1
    assert "  accepted <bob@example.org> from <Alice@example.net>\n  queued   qp 4250\n" in text


def test_track_host_an_ip_is_that_address(tmp_path: Path) -> None:
    """--host 198.51.100.7 found the rblsmtpd-blocked session of 198.51.100.77 (a
    substring); an IP is now that address, in any spelling, and a part of one (a
    network's first octets) or a name is still looked for as a substring."""
    f = tmp_path / "smtpd.log"
    f.write_bytes(b"".join(ln + b"\n" for ln in
                           (FIX / "smtpd_recordio_ipv6.txt").read_bytes().split(b"\n")[1:-1]))
    rc, out = run(track_main, [str(f), "--host", "198.51.100.7", "--json"])
    assert (rc, out) == (1, "")
    for want in ("198.51.100.77", "::ffff:198.51.100.77", "198.51.100.", "[198.51.100.77]"):
        rc, out = run(track_main, [str(f), "--host", want, "--json"])
        (sess,) = [orjson.loads(x) for x in out.splitlines()]
        assert rc == 0 and sess["remote_ip"] == "198.51.100.77", want
    rc, out = run(track_main, [str(f), "--host", "2001:db8:0::25", "--sessions", "--json"])
    (sess,) = [orjson.loads(x) for x in out.splitlines()]
    assert rc == 0 and sess["conn_pid"] == 4242
    rc, out = run(track_main, [str(f), "--host", "client.example", "--sessions", "--json"])
    assert rc == 0 and orjson.loads(out)["remote_host"] == "client.example.net"


def test_track_by_qp_and_an_indimail_queue_named(tmp_path: Path) -> None:
    """--qp finds what the smtpd's "250 ok … qp N" names (by --search, the digits matched
    times and ids too); indimail's queues each have their own inodes, so one msg number
    can be two mails at once: the text names the queue."""
    lines = (FIX / "indimail_readme_multiqueue_tai64nlocal.txt").read_text().splitlines()[1:]
    start = next(i for i, ln in enumerate(lines) if "new msg 100926020" in ln)
    mine = [ln for ln in lines[start:] if ln.endswith(" queue5")]  # delivery 1 in both
    other = [ln.replace(" queue5", " queue2").replace("qp 555", "qp 556")
             .replace("<root@indimail.org>", "<other@indimail.org>") for ln in mine]
    log = tmp_path / "current"
    log.write_text("\n".join(a for pair in zip(mine, other, strict=True) for a in pair) + "\n")
    rc, text = run(track_main, [str(log), "--utc", "--msgid", "100926020"])
    assert rc == 0 and "mail msg 100926020 in queue5 (" in text and "mail msg 100926020 in queue2 (" in text
    rc, out = run(track_main, [str(log), "--utc", "--qp", "556", "--json"])
    (m,) = [orjson.loads(x) for x in out.splitlines()]
    assert rc == 0 and (m["queue"], m["mail_from"]) == ("queue2", "other@indimail.org")
    assert m["recipients"][0]["result"] == "success" and m["flags"] == []
    # the bounced mail (bounce qp 20357) and its bounce (qp 20357)
    rc, out = run(track_main, [str(FIX / "notqmail_TEST.deliver.txt"), "--qp", "20357", "--json"])
    assert rc == 0 and [orjson.loads(x)["msg"] for x in out.splitlines()] == [53, 54]
    smtpd = tmp_path / "smtpd.log"
    smtpd.write_bytes(b"".join(ln + b"\n" for ln in
                               (FIX / "smtpd_recordio_ipv6.txt").read_bytes().split(b"\n")[1:-1]))
    rc, out = run(track_main, [str(smtpd), str(FIX / "send_recordio_ipv6.txt"), "--qp", "4250",
                               "--json"])
    (m,) = [orjson.loads(x) for x in out.splitlines()]
    assert rc == 0 and m["msg"] == 777 and m["session"]["conn_pid"] == 4242
    rc, out = run(track_main, [str(smtpd), "--qp", "4251"])
    assert (rc, out) == (1, "")


def test_track_text_of_a_mail_deferred_for_days_across_a_qmail_send_restart() -> None:
    """The attempt qmail-send's restart cut showed as "? interrupted: " (no time: it has
    only a start), and days as "after 172801.0s"."""
    rc, text = run(track_main, [str(FIX / "qmail_lifecycle.txt"), "--utc", "--from", "a@x.org"])
    assert rc == 0
    assert "done 2023-11-16 22:13:21.000Z   in queue 2d 0h\n" in text
    assert "<r1@far.example> remote FAILURE dsn 5.1.1 via 192.0.2.7 after 2d 0h (3 attempts)\n" in text
    assert "           2023-11-14 22:13:22.000Z interrupted (qmail-send restarted)\n" in text
    assert "<r2@far.example> remote SUCCESS via 192.0.2.9 after 1.1s\n" in text


def test_track_shows_a_session_matched_by_a_recipient_its_queued_mail_does_not_have(tmp_path: Path) -> None:
    """Suspected by the review: a session that matched only by a recipient of a
    transaction that queued nothing (the message refused after DATA) was hidden once
    the mail of its second transaction came naming it, though that mail did not match
    and was not shown: `--to carol` found nothing. The lines: smtpd_recordio_ipv6.txt's
    session with a first transaction to carol refused at the end of DATA."""
    base = 0x40000000665b0d4a000001f4
    steps = [
        "tcpserver: pid 4242 from 2001:db8::25",
        "tcpserver: ok 4242 mx.example.org:2001:db8::1:25 client.example.net:2001:db8::25::51234",
        "4242 > 220 mx.example.org ESMTP ",
        "4242 < EHLO client.example.net ",
        "4242 > 250 8BITMIME ",
        "4242 < MAIL FROM:<Alice@example.net> ",
        "4242 > 250 ok ",
        "4242 < RCPT TO:<carol@example.org> ",
        "4242 > 250 ok ",
        "4242 < DATA ",
        "4242 > 354 go ahead ",
        "4242 < . ",
        "4242 > 554 sorry, this message contains a virus (#5.3.4) ",
        "4242 < MAIL FROM:<Alice@example.net> ",
        "4242 > 250 ok ",
        "4242 < RCPT TO:<bob@example.org> ",
        "4242 > 250 ok ",
        "4242 < DATA ",
        "4242 > 354 go ahead ",
        "4242 < . ",
        "4242 > 250 ok 1717243200 qp 4250 ",
        "4242 < QUIT ",
        "4242 > 221 mx.example.org ",
        "tcpserver: end 4242 status 0",
    ]
    smtpd = tmp_path / "smtpd.log"
    smtpd.write_text("".join(f"@{base + i * 10_000_000:024x} {s}\n" for i, s in enumerate(steps)))
    send = tmp_path / "send.log"
    send.write_text("\n".join((FIX / "send_recordio_ipv6.txt").read_text().splitlines()[1:]) + "\n")
    rc, out = run(track_main, [str(smtpd), str(send), "--to", "carol@example.org", "--json"])
    recs = [orjson.loads(x) for x in out.splitlines()]
    assert rc == 0 and [r["event"] for r in recs] == ["smtp_session"], out
    assert "carol@example.org" in recs[0]["accepted_rcpts"] and recs[0]["qps"] == [4250]
    # bob's mail still carries the session, which is not shown again on its own
    rc, out = run(track_main, [str(smtpd), str(send), "--to", "bob@example.org", "--json"])
    recs = [orjson.loads(x) for x in out.splitlines()]
    assert rc == 0 and [r["event"] for r in recs] == ["mail"] and recs[0]["session"]["conn_pid"] == 4242


def test_stats_of_a_postfix_delays_digit_run_is_no_time(tmp_path: Path) -> None:
    # a corrupt or forged status=sent line: delays='s c is a digit run float() makes inf,
    # which stats put in its histogram (OverflowError: the whole report lost)
    run_ = "9" * 400
    log = tmp_path / "maillog"
    log.write_text(
        "Nov 30 06:00:00 mx postfix/smtpd[100]: ABC123: client=a.example[192.0.2.1]\n"
        "Nov 30 06:00:00 mx postfix/qmgr[102]: ABC123: from=<a@example.org>, size=100, nrcpt=1 (queue active)\n"
        "Nov 30 06:00:01 mx postfix/smtp[103]: ABC123: to=<b@example.net>, relay=mx.example.net[192.0.2.2]:25,"
        f" delay=1.5, delays=0.1/0/{run_}/0, dsn=2.0.0, status=sent (250 ok)\n"
        "Nov 30 06:00:02 mx postfix/smtp[103]: ABC124: to=<c@example.net>, relay=mx.example.net[192.0.2.2]:25,"
        " delay=2, delays=0.5/0/0.25/0.5, dsn=2.0.0, status=sent (250 ok)\n"
        "Nov 30 06:00:01 mx postfix/qmgr[102]: ABC123: removed\n")
    rc, out = run(stats_main, [str(log), "--json"])
    assert rc == 0
    d = orjson.loads(out)
    assert d["delivery_time_s"]["count"] == 1 and d["delivery_time_s"]["max"] == 0.75
    assert d["deliveries"]["success"] == 2


def test_an_impossible_path_is_said_as_it_is(tmp_path: Path, capsys) -> None:
    """A link to itself and a file taken for a directory were "no such file or
    directory" (found by a black-box review)."""
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "file").write_bytes(b"")
    for path, why in ((tmp_path / "loop", "Too many levels of symbolic links"),
                      (tmp_path / "file" / "x", "Not a directory"),
                      (tmp_path / "missing", "no such file or directory")):
        rc, _ = run(stats_main, [str(path)])
        assert rc == 2 and capsys.readouterr().err.splitlines() == [f"shipper stats: {path}: {why}"]


def test_text_reports_show_a_clients_escape_sequences_escaped(tmp_path: Path) -> None:
    """A security review: a sender or HELO holding terminal escapes (an SMTP client
    writes them) went raw to the admin's terminal from track and stats (retitled, the
    screen cleared); JSON output escapes them anyway."""
    log = tmp_path / "send.log"
    log.write_bytes(b"@400000005a49ba341eefa7a4 info msg 7: bytes 812 from <a\x1b]0;PWNED\x07\x1b[2J@x.test> "
                    b"qp 99 uid 0\n@400000005a49ba341eefa7a5 starting delivery 1: msg 7 to remote b@y.test\n")
    for fn in (track_main, stats_main):
        rc, out = run(fn, [str(log)])
        assert "\x1b" not in out and "\x07" not in out
        assert "a\\x1b]0;PWNED\\x07\\x1b[2J@x.test" in out
