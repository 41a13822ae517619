"""Postfix/PMG correlation against pmg-log-tracker's own test cases.

Each fixture pair (tests/fixtures/pmg-log-tracker/test_input_X, test_output_X; see
that directory's README.md for the source) is run through the real LineParser and
our Correlator. Every block of pmg-log-tracker's expected output must have a
summary of ours that groups the same input lines, with the same queue id, size,
sender, message-id, client and, per recipient, the same DSN class and relay.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from shipper.parse import LineParser, ParseOptions
from shipper.track.correlator import Correlator

PMG = Path(__file__).parent / "fixtures" / "pmg-log-tracker"
CASES = ["before_queue_syntax_reject", "foreign_lines", "misleading_lines",
         "time_rfc3339_mixed", "timechange"]
_TO_RE = re.compile(r"^TO:[0-9A-F]+:([^:]+):(\w): from <(.*?)> to <(.*?)>(?: \((.*)\))?$")


def expected_blocks(path: Path) -> list[dict[str, Any]]:
    """pmg-log-tracker's output: one dict per QENTRY/SMTPD block."""
    blocks: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for line in path.read_text().splitlines():
        if line.startswith(("QENTRY: ", "SMTPD: ")):
            kind, ident = line.split(": ", 1)
            cur = {"kind": kind, "id": ident, "to": set(), "lines": set(), "size": None,
                   "client": None, "msgid": None}
            blocks.append(cur)
        elif cur is None:
            continue
        elif line.startswith("SIZE: "):
            cur["size"] = int(line[6:])
        elif line.startswith("CLIENT: "):
            cur["client"] = line[8:].rstrip(",")  # pmg prints "host[ip]," for orig_client lines
        elif line.startswith("MSGID: "):
            cur["msgid"] = line[7:]
        elif line.startswith("TO:"):
            m = _TO_RE.match(line)
            assert m, line
            cur["to"].add((m.group(2), m.group(3), m.group(4), m.group(5)))
        elif re.match(r"^L[0-9A-F]{8} ", line):
            cur["lines"].add(int(line[1:9], 16))
    return blocks


def correlate(path: Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Our summaries of an input, and event id → pmg line number (non-blank lines count)."""
    parser = LineParser(ParseOptions(syslog_year=2020, local_tz=False), source=str(path),
                        file_id="pmg0000000000000")
    recs = []
    numbers: dict[str, int] = {}
    offset = 0
    n = 0
    for raw in path.read_bytes().splitlines(keepends=True):
        if raw.strip():
            n += 1
            rec = parser.parse(raw, offset)
            numbers[rec.event_id] = n
            recs.append(rec.to_dict())
        offset += len(raw)
    corr = Correlator()
    out = []
    for i in range(0, len(recs), 7):  # small batches: state carries across feed() calls
        out += corr.feed(recs[i:i + 7])
    out += corr.finish()
    for s in out:
        orjson.dumps(s)  # every summary is JSON-able
    return out, numbers


def _client(rec: dict[str, Any]) -> str | None:
    ip = rec.get("remote_ip")
    if ip is None:
        return None
    return f"{rec['remote_host']}[{ip}]" if rec.get("remote_host") else ip


def _lines(rec: dict[str, Any], numbers: dict[str, int]) -> set[int]:
    return {numbers[e] for e in rec["event_ids"]}


@pytest.mark.parametrize("case", CASES)
def test_pmg_log_tracker_case(case: str) -> None:
    expected = expected_blocks(PMG / f"test_output_{case}")
    assert expected, case
    ours, numbers = correlate(PMG / f"test_input_{case}")
    mails = {m["qid"]: m for m in ours if m["event"] == "mail"}
    sessions = [s for s in ours if s["event"] == "smtp_session" and not s["qids"]]
    assert all(m["program"] == "postfix" for m in mails.values())
    matched_sessions = []
    for blk in expected:
        if blk["kind"] == "QENTRY":
            m = mails.get(blk["id"])
            assert m is not None, f"{case}: no mail for queue id {blk['id']}"
            assert (m.get("size") or 0) == blk["size"], blk["id"]
            assert _client(m) == blk["client"], blk["id"]
            msgid = f"<{m['message_id']}>" if "message_id" in m else None
            assert msgid == blk["msgid"], blk["id"]
            got_to = {(r["dsn_class"], m.get("mail_from"), r["rcpt_to"], r.get("relay"))
                      for r in m["recipients"]}
            assert got_to == blk["to"], blk["id"]
            assert _lines(m, numbers) == blk["lines"], blk["id"]
        else:
            cands = [s for s in sessions if _lines(s, numbers) == blk["lines"]]
            assert len(cands) == 1, f"{case}: session block {blk['id']} lines {sorted(blk['lines'])}"
            s = cands[0]
            matched_sessions.append(s["event_id"])
            assert _client(s) == blk["client"], blk["id"]
            got_to = {(r["dsn_class"], r.get("mail_from"), r["rcpt_to"], r.get("relay"))
                      for r in s["recipients"]}
            assert got_to == blk["to"], blk["id"]
    # Nothing extra: every mail and every mail-less session of ours is one of theirs.
    assert set(mails) == {b["id"] for b in expected if b["kind"] == "QENTRY"}
    assert sorted(matched_sessions) == sorted(s["event_id"] for s in sessions)


def test_complete_when_removed_and_disconnect_in_either_order() -> None:
    """A mail is emitted only when both qmgr 'removed' and smtpd 'disconnect' were seen."""
    base = [
        "Jun  1 10:00:00 mx postfix/smtpd[100]: connect from a.example[192.0.2.1]",
        "Jun  1 10:00:01 mx postfix/smtpd[100]: 1A2B3C4D5E: client=a.example[192.0.2.1]",
        "Jun  1 10:00:02 mx postfix/cleanup[101]: 1A2B3C4D5E: message-id=<m1@a.example>",
        "Jun  1 10:00:03 mx postfix/qmgr[102]: 1A2B3C4D5E: from=<s@a.example>, size=999, nrcpt=1 (queue active)",
        "Jun  1 10:00:04 mx postfix/smtp[103]: 1A2B3C4D5E: to=<r@b.example>, relay=mx.b.example[198.51.100.7]:25, delay=1, delays=0.1/0/0.4/0.5, dsn=4.4.1, status=deferred (connect timed out)",
        "Jun  1 10:05:04 mx postfix/smtp[103]: 1A2B3C4D5E: to=<r@b.example>, relay=mx.b.example[198.51.100.7]:25, delay=301, delays=0.1/300/0.4/0.5, dsn=2.0.0, status=sent (250 ok)",
    ]
    removed = "Jun  1 10:05:05 mx postfix/qmgr[102]: 1A2B3C4D5E: removed"
    disconnect = "Jun  1 10:05:06 mx postfix/smtpd[100]: disconnect from a.example[192.0.2.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"
    for tail in ([removed, disconnect], [disconnect, removed]):
        parser = LineParser(ParseOptions(syslog_year=2024, local_tz=False), file_id="x" * 16)
        corr = Correlator()
        got: list[dict[str, Any]] = []
        for i, line in enumerate(base + tail):
            emitted = corr.feed([parser.parse(line.encode(), i * 300).to_dict()])
            got += emitted
            if i < len(base) + 1:
                assert not [e for e in emitted if e["event"] == "mail"], (tail, i)
        mails = [g for g in got if g["event"] == "mail"]
        assert len(mails) == 1
        m = mails[0]
        assert m["qid"] == "1A2B3C4D5E" and m["size"] == 999 and m["mail_from"] == "s@a.example"
        assert m["message_id"] == "m1@a.example"
        (r,) = m["recipients"]
        assert r["result"] == "success" and r["dsn_class"] == "2" and r["n_attempts"] == 2
        assert [a["status"] for a in r["attempts"]] == ["deferred", "sent"]
        assert m["session"]["remote_ip"] == "192.0.2.1"
        assert m["flags"] == []
        assert len(m["event_ids"]) == 8


def test_expired_message_turns_its_deferred_recipients_into_failures() -> None:
    from shipper.parse import LineParser
    from shipper.track.correlator import Correlator
    lines = [  # Postfix's own format strings (qmgr_active.c, smtp's status=deferred)
        b"Mar  3 10:00:00 mx postfix/qmgr[999]: 3F2A81C0E5: from=<alice@example.net>, size=1200, nrcpt=1 (queue active)",
        b"Mar  3 10:00:05 mx postfix/smtp[1234]: 3F2A81C0E5: to=<bob@example.org>, relay=none, delay=5, "
        b"delays=0/0/5/0, dsn=4.4.1, status=deferred (connect to mx.example.org[192.0.2.25]:25: Connection refused)",
        b"Mar  3 10:00:06 mx postfix/qmgr[999]: 3F2A81C0E5: from=<alice@example.net>, status=expired, returned to sender",
        b"Mar  3 10:00:06 mx postfix/qmgr[999]: 3F2A81C0E5: removed",
    ]
    parser = LineParser(source="t", file_id="0123456789abcdef")
    recs = [parser.parse(ln + b"\n", i * 200).to_dict() for i, ln in enumerate(lines)]
    c = Correlator()
    out = c.feed(recs) + c.finish()
    (mail,) = [o for o in out if o["event"] == "mail"]
    (r,) = mail["recipients"]
    assert (r["rcpt_to"], r["result"], r["status"]) == ("bob@example.org", "failure", "expired")
    assert mail["result"] == "failure" and mail["n_failure"] == 1 and mail["n_deferral"] == 0


REAL_37 = Path(__file__).parent / "fixtures" / "samples" / "postfix_3.7_real.txt"


def _real_37() -> list[dict[str, Any]]:
    """Our summaries of the log a real Postfix 3.7.11 wrote (tests/test_postfix_real.py)."""
    parser = LineParser(ParseOptions(syslog_year=2026, local_tz=False), source=str(REAL_37),
                        file_id="pf37000000000000")
    recs = []
    offset = 0
    for raw in REAL_37.read_bytes().splitlines(keepends=True):
        if not raw.startswith(b"#"):
            recs.append(parser.parse(raw, offset).to_dict())
        offset += len(raw)
    corr = Correlator()
    return corr.feed(recs) + corr.finish()


def _mail37(out: list[dict[str, Any]], qid: str) -> dict[str, Any]:
    (m,) = [o for o in out if o["event"] == "mail" and o["qid"] == qid]
    return m


def test_real_cleanup_reject_and_discard_end_the_mail() -> None:
    """cleanup's header_checks REJECT and DISCARD delete the queue file and no qmgr
    'removed' follows (Postfix 3.7, real log): both mails were left open, summarised
    only at the end of input as incomplete and partial, sender and fate unknown."""
    out = _real_37()
    rej = _mail37(out, "2078920C783")
    assert rej["flags"] == [] and "incomplete_reason" not in rej
    assert (rej["mail_from"], rej["result"], rej["session"]["remote_ip"]) == (
        "alice@relay.test", "rejected", "127.0.0.1")
    (r,) = rej["recipients"]
    assert (r["rcpt_to"], r["result"], r["dsn"], r["dsn_class"], r["stage"], r["text"]) == (
        "ok5@relay.test", "rejected", "5.7.1", "5", "header", "no thanks")
    assert r["attempts"][0]["time_unix_ns"] == rej["time_unix_ns"]
    dis = _mail37(out, "20A3F20C783")
    assert dis["flags"] == [] and dis["result"] == "discarded"
    (r,) = dis["recipients"]
    assert (r["rcpt_to"], r["result"], r["text"], r.get("dsn")) == (
        "ok6@relay.test", "discarded", "dropped here", None)
    # both emitted with their session's end, before the input's end
    ends = [o["event_id"] for o in out]
    last_open = min(i for i, o in enumerate(out) if o.get("incomplete_reason") == "open_at_end")
    assert ends.index(rej["event_id"]) < last_open and ends.index(dis["event_id"]) < last_open


def test_real_smtpd_refusal_of_the_message_ends_the_mail() -> None:
    """smtpd's reject at DATA or END-OF-MESSAGE after the queue id was named (Postfix
    3.7, real log): no qmgr line and no 'removed' follow; the mail was left open to the
    end of input, incomplete and partial, its sender unknown."""
    out = _real_37()
    for qid, sender, rcpt, stage in (("2227E20C783", "nodata@relay.test", "ok7@relay.test", "DATA"),
                                     ("237E020C774", "eod@relay.test", "ok8@relay.test", "END-OF-MESSAGE")):
        m = _mail37(out, qid)
        assert m["flags"] == [] and (m["mail_from"], m["result"]) == (sender, "rejected"), m
        (r,) = m["recipients"]
        assert (r["rcpt_to"], r["result"], r["dsn"], r["smtp_code"], r["stage"]) == (
            rcpt, "rejected", "5.7.1", 554, stage)
        assert m["session"]["remote_ip"] == "127.0.0.1" and "incomplete_reason" not in m


def test_real_bounce_is_named_by_the_mail_that_caused_it() -> None:
    out = _real_37()
    m = _mail37(out, "19F2220C76D")
    assert m["bounces"] == [{"bounce_qid": "1E6AE20C780", "notification": "non-delivery",
                             "bounce_to": "sender"}]
    assert _mail37(out, "1E6AE20C780")["mail_from"] == ""
    from shipper.track.report import render_text
    assert "  bounced: sender non-delivery notification, queue id 1E6AE20C780\n" in render_text(m)


def test_real_smtpd_reject_after_queue_id_has_its_time_and_reason() -> None:
    """A recipient smtpd refused after the queue id existed: the report printed
    '? rejected' (no time, no text)."""
    from shipper.track.report import render_text
    m = _mail37(_real_37(), "1DF4120C774")
    (r,) = [r for r in m["recipients"] if r["rcpt_to"] == "y@error.test"]
    assert r["result"] == "rejected" and r["attempts"][0]["time_unix_ns"] is not None
    assert ("2026-11-30 06:29:35.000Z rejected: <y@error.test>: Recipient address rejected: "
            "no such user here\n") in render_text(m, utc=True).replace("T", " ")


def test_real_session_refusal_is_found_by_its_recipient() -> None:
    """A Postfix session that queued mail and refused a relay at RCPT: `shipper track
    --to` that recipient found nothing (only qmail's decisions were looked at)."""
    from shipper.track.report import TrackQuery, matches
    out = _real_37()
    hits = [o for o in out if matches(o, TrackQuery(rcpt_to="z@elsewhere.example"))]
    assert [(h["event"], h["qids"][:1], [r["rcpt_to"] for r in h["recipients"]]) for h in hits] == [
        ("smtp_session", ["19F2220C76D"], ["z@elsewhere.example"])]
    assert not [o for o in out if matches(o, TrackQuery(rcpt_to="nobody@elsewhere.example"))]


def test_real_line_logged_after_a_refused_mail_ended_opens_no_second_mail() -> None:
    """Postfix's processes write to one log socket in the order they get to it: in a CI
    run cleanup's 'QID: message-id=' of a mail smtpd refused at END-OF-MESSAGE came after
    the session's 'disconnect', which had emitted the mail. That line opened a second
    mail of the same queue id, summarised at the end of input as incomplete. The real
    3.7 log with that one line moved after the session's end."""
    lines = [ln for ln in REAL_37.read_bytes().splitlines(keepends=True) if not ln.startswith(b"#")]
    late = next(ln for ln in lines if b"237E020C774: message-id=" in ln)
    end = next(i for i, ln in enumerate(lines) if b"smtpd[10059]: disconnect" in ln
               and b"mail=13" in ln)
    lines.remove(late)
    lines.insert(end, late)  # (the disconnect moved up by one with the removal)
    parser = LineParser(ParseOptions(syslog_year=2026, local_tz=False), file_id="pf37000000000001")
    recs, offset = [], 0
    for raw in lines:
        recs.append(parser.parse(raw, offset).to_dict())
        offset += len(raw)
    corr = Correlator()
    out = corr.feed(recs) + corr.finish()
    (m,) = [o for o in out if o["event"] == "mail" and o["qid"] == "237E020C774"]
    assert m["flags"] == [] and (m["mail_from"], m["result"]) == ("eod@relay.test", "rejected")


def _lines_summaries(lines: list[bytes], restart_before: int | None = None,
                     file_id: str = "pf37000000000002") -> list[dict[str, Any]]:
    """Our summaries of real log lines; with ``restart_before``, the correlator's state
    is saved (as JSON) and a new one loaded from it before that line, as the daemon
    does across a restart."""
    parser = LineParser(ParseOptions(syslog_year=2026, local_tz=False), file_id=file_id)
    recs, offset = [], 0
    for raw in lines:
        recs.append(parser.parse(raw, offset).to_dict())
        offset += len(raw)
    corr = Correlator()
    if restart_before is None:
        return corr.feed(recs) + corr.finish()
    out = corr.feed(recs[:restart_before])
    corr = Correlator.from_state(orjson.loads(orjson.dumps(corr.to_state())))
    return out + corr.feed(recs[restart_before:]) + corr.finish()


def test_real_late_line_after_a_refused_mail_opens_no_second_mail_across_a_restart() -> None:
    """The guard against a late line about a refused mail (above) lived only in memory:
    after the shipper's restart between the session's end and the late line, that line
    opened a second mail of the queue id, summarised incomplete at the end."""
    lines = [ln for ln in REAL_37.read_bytes().splitlines(keepends=True) if not ln.startswith(b"#")]
    late = next(ln for ln in lines if b"237E020C774: message-id=" in ln)
    end = next(i for i, ln in enumerate(lines) if b"smtpd[10059]: disconnect" in ln
               and b"mail=13" in ln)
    lines.remove(late)
    lines.insert(end, late)
    out = _lines_summaries(lines, restart_before=end)
    (m,) = [o for o in out if o["event"] == "mail" and o["qid"] == "237E020C774"]
    assert m["flags"] == [] and (m["mail_from"], m["result"]) == ("eod@relay.test", "rejected")


DISCARD_37 = Path(__file__).parent / "fixtures" / "samples" / "postfix_3.7_smtpd_discard_real.txt"


def test_real_smtpd_discard_ends_the_mail() -> None:
    """smtpd's DISCARD (access maps at RCPT, DATA, END-OF-MESSAGE) drops the whole
    message: no qmgr line and no 'removed' follow (Postfix 3.7, real log). The four
    mails were left open to the end of input, incomplete, their fate unknown. At RCPT
    before any recipient was accepted, the line is NOQUEUE and the queue id is named
    by the session's next line."""
    lines = [ln for ln in DISCARD_37.read_bytes().splitlines(keepends=True) if not ln.startswith(b"#")]
    out = _lines_summaries(lines)
    mails = {o["qid"]: o for o in out if o["event"] == "mail"}
    assert sorted(mails) == ["BBEB921620A", "BC2A021620A", "BC50321620A", "BC73A21620A"]
    for qid, sender, rcpt, stage in (
            ("BBEB921620A", "dan@relay.test", "gone@relay.test", "RCPT"),
            ("BC2A021620A", "dan@relay.test", "gone@relay.test", "RCPT"),
            ("BC50321620A", "dd@relay.test", "ok2@relay.test", "DATA"),
            ("BC73A21620A", "de@relay.test", "ok3@relay.test", "END-OF-MESSAGE")):
        m = mails[qid]
        assert m["flags"] == [] and "incomplete_reason" not in m, m
        assert (m["mail_from"], m["result"], m["session"]["remote_ip"]) == (
            sender, "discarded", "127.0.0.1")
        (r,) = m["recipients"]
        assert (r["rcpt_to"], r["result"], r["stage"]) == (rcpt, "discarded", stage)
        assert r["text"].endswith(" gone at " + {"RCPT": "rcpt", "DATA": "data"}.get(stage, "end"))
    assert mails["BC73A21620A"]["message_id"] == "d4@client.test"
    (s,) = [o for o in out if o["event"] == "smtp_session"]
    assert s["qids"] == ["BBEB921620A", "BC2A021620A", "BC50321620A", "BC73A21620A"]
    assert s["result"] == "accepted" and s["flags"] == []


def test_refused_guard_is_kept_only_while_late_lines_can_come() -> None:
    """The refused queue ids are in the saved state, and leave it once 60 s of log
    time have passed (they would otherwise fill the checkpoint up to max_open)."""
    lines = [ln for ln in DISCARD_37.read_bytes().splitlines(keepends=True) if not ln.startswith(b"#")]
    parser = LineParser(ParseOptions(syslog_year=2026, local_tz=False), file_id="pf37000000000003")
    recs = [parser.parse(raw, i).to_dict() for i, raw in enumerate(lines)]
    corr = Correlator()
    corr.feed(recs)
    t = recs[-1]["time_unix_ns"]
    assert corr.flush(now_ns=t + 60 * 10**9) == []
    assert sorted(k.split("\x00")[1] for k, _ in corr.to_state()["postfix"]["refused"]) == [
        "BBEB921620A", "BC2A021620A", "BC50321620A", "BC73A21620A"]
    corr.flush(now_ns=t + 61 * 10**9)
    assert corr.to_state()["postfix"]["refused"] == []


def test_real_bounce_is_counted_by_stats() -> None:
    """`shipper stats` counted qmail's 'bounce msg' but not Postfix's bounce(8)
    'sender non-delivery notification' (Postfix 3.7, real log: one, for bad@relay.test)."""
    from shipper.track.report import Stats, render_stats
    st = Stats()
    for o in _real_37():
        st.add(o)
    d = st.to_dict()
    assert d["bounces"] == {"queued": 1, "double_discarded": 0, "triple_discarded": 0}
    assert "  bounces queued (bounce msg, non-delivery notification)  1\n" in render_stats(d)


def test_real_smtpd_discard_survives_a_restart_at_every_line() -> None:
    lines = [ln for ln in DISCARD_37.read_bytes().splitlines(keepends=True) if not ln.startswith(b"#")]
    whole = _lines_summaries(lines)
    assert sum(o["event"] == "mail" and o["result"] == "discarded" for o in whole) == 4
    for cut in range(1, len(lines)):
        assert _lines_summaries(lines, restart_before=cut) == whole, cut
