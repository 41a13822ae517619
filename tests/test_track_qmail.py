"""qmail-send correlation: our ``mail`` records against qmailanalog ``matchup`` semantics.

Real lines (tests/fixtures/track/*.txt, first line names the source) go through the
real LineParser and the Correlator; the records are rendered in matchup's output
form (``m`` per message, ``d`` per delivery, AQ matchup.c) and compared with the
expected output derived by hand from the input and matchup.c.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from shipper.parse import LineParser
from shipper.track.correlator import Correlator, CorrelatorOptions
from shipper.track.qmail import QmailOptions, matchup_lines

FIX = Path(__file__).parent / "fixtures" / "track"
NOW = 1_600_000_000_000_000_000  # "read at" time for unstamped lines (TEST.deliver)


def records(name: str) -> list[dict[str, Any]]:
    data = [ln + b"\n" for ln in (FIX / name).read_bytes().split(b"\n")[:-1]]  # \r is data
    assert data[0].startswith(b"# source: ")
    parser = LineParser(source=name, file_id="0123456789abcdef")
    out = []
    offset = len(data[0])
    for line in data[1:]:
        out.append(parser.parse(line, offset, now_ns=NOW).to_dict())
        offset += len(line)
    return out


def correlate(recs: list[dict[str, Any]], corr: Correlator | None = None) -> list[dict[str, Any]]:
    c = corr or Correlator()
    return c.feed(recs) + c.finish()


def mails(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in out if o["event"] == "mail"]


def test_bayour_matchup() -> None:
    out = mails(correlate(records("bayour_perl_comments_qmail-send_accustamp.txt")))
    # matchup prints in input order; the source's 4th example predates the others, and
    # matchup_lines orders by time: it comes first here.
    assert matchup_lines(out) == [
        "d d 1054189045.549570 1054189045.549657 1054189046.239668 7308 <baby3@3333.3utilities.com> local.87smtjy4le.fsf@papadoc.bayour.com 976 64014 Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/",
        "m 1054189045.549570 1054189046.260452 7308 0 1 0 <baby3@3333.3utilities.com> 976 64014",
        "d k 1054189746.123151 1054189746.123958 1054189746.373645 830 <turbo@bayour.com> remote.turbo@tripnet.se 6190 1000 195.100.21.7_accepted_message./Remote_host_said:_250_OK_id=19LGuQ-0003OJ-00/",
        "m 1054189746.123151 1054189746.374332 830 1 0 0 <turbo@bayour.com> 6190 1000",
        "d k 1054189750.812169 1054189750.812192 1054189754.376563 1676 <turbo@bayour.com> local.turbo@bayour.com 6206 64014 did_0+0+1/",
        "m 1054189750.812169 1054189754.377470 1676 1 0 0 <turbo@bayour.com> 6206 64014",
        "d d 1054194593.322896 1054194593.322921 1054194596.057500 869 <turbo@bayour.com> remote.fjkdasljf@nocrew.org 24150 1000 213.242.147.30_does_not_like_recipient./Remote_host_said:_550_Unknown_local_part_fjkdasljf_in_<fjkdasljf@nocrew.org>/Giving_up_on_213.242.147.30./",
        "m 1054194593.322896 1054194596.081517 869 0 1 0 <turbo@bayour.com> 24150 1000",
    ]
    # The same inode (161214) is four different messages: four records, ids from their first lines.
    assert [m["msg"] for m in out] == [161214] * 4
    assert len({m["event_id"] for m in out}) == 4
    assert out[0]["event_id"] == "0123456789abcdef-" + format((FIX / "bayour_perl_comments_qmail-send_accustamp.txt").read_bytes().index(b"\n") + 1, "x") + "m"
    failed = out[2]
    assert failed["bounce_qp"] == 24162 and failed["result"] == "failure"
    (r,) = failed["recipients"]
    assert r["smtp_code"] == 550 and r["relay_ip"] == "213.242.147.30" and r["channel"] == "remote"
    assert r["delay_s"] == 2.734604 and failed["queue_time_s"] == 2.758621
    # Delivery ids went down (183 → 108): seen as a qmail-send restart.
    assert out[3]["recipients"][0]["attempts"][0]["epoch"] == 1


def test_fluent_tai64n_matchup() -> None:
    out = mails(correlate(records("fluent-plugin-tai64n_parser_README.txt")))
    assert matchup_lines(out) == [
        "d k 1392180611.848841 1392180611.926637 1392180611.947211 372 <root@**********.pb> remote.glidenote@********.co.jp 31835 0 ***.***.***.***_accepted_message./Remote_host_said:_250_ok_1392180611_qp_10394/",
        "m 1392180611.848841 1392180611.947213 372 1 0 0 <root@**********.pb> 31835 0",
    ]
    assert out[0]["time"] == "2014-02-12T04:50:11.947213500Z" and out[0]["time_source"] == "tai64n"


def test_notqmail_test_deliver_bounce_linked() -> None:
    out = mails(correlate(records("notqmail_TEST.deliver.txt")))
    t = "1600000000.000000"
    assert matchup_lines(out) == [
        f"d k {t} {t} {t} 246 <me@domain> local.me@domain 20345 666 did_1+0+0/",
        f"m {t} {t} 246 1 0 0 <me@domain> 20345 666",
        f"d d {t} {t} {t} 246 <me@domain> local.nonexistent@domain 20351 666 No_such_address.__#5.1.1_/",
        f"m {t} {t} 246 0 1 0 <me@domain> 20351 666",
        f"d k {t} {t} {t} 743 <> local.me@domain 20357 666 did_1+0+0/",
        f"m {t} {t} 743 1 0 0 <> 20357 666",
        f"d k {t} {t} {t} 246 <me@domain> remote.me@wherever 20372 666 1.2.3.4_accepted_message./...",
        f"m {t} {t} 246 1 0 0 <me@domain> 20372 666",
    ]
    assert out[1]["bounce_qp"] == 20357
    assert out[2]["bounce_of"] == {"msg": 53, "qp": 20351, "event_id": out[1]["event_id"]}
    assert out[2]["bounce_kind"] == "bounce"


def test_fehcom_and_indimail() -> None:
    out = mails(correlate(records("fehcom_sqmail_logging_chapter.txt")))
    assert matchup_lines(out) == [
        "d k 1514839863.121918 1514839863.121920 1514839863.714440 7816 <feh@fehcom.de> remote.x@y.de 17808 7005 1.2.3.4_TLS_transmitted_message_accepted./Remote_host_said:_250_OK_id=1eW731-0004n7-G7/",
        "m 1514839863.121918 1514839863.714446 7816 1 0 0 <feh@fehcom.de> 17808 7005",
    ]
    out = mails(correlate(records("indimail_readme_multiqueue_tai64nlocal.txt")))
    assert matchup_lines(out) == [
        "d k 1593072009.681533 1593072009.682401 1593072009.713833 814 <root@indimail.org> local.example.com-postmaster@example.com 555 0 did_0+0+1/",
        "m 1593072009.681533 1593072009.718523 814 1 0 0 <root@indimail.org> 555 0",
    ]
    assert out[0]["queue"] == "queue5" and out[0]["msg"] == 100926020


LIFECYCLE = [
    "d k 1700000000.000005 1700000000.000006 1700000000.500000 2000 <b@x.org> local.u1@here.example 502 89 did_1+0+0/",
    "m 1700000000.000005 1700000000.600000 2000 1 0 0 <b@x.org> 502 89",
    "d z 1700000000.000002 1700000000.000003 1700000001.000000 1000 <a@x.org> remote.r1@far.example 501 89 Sorry,_I_wasn't_able_to_establish_an_SMTP_connection._(#4.4.1)/",
    "d k 1700000000.000002 1700000000.000007 1700000001.100000 1000 <a@x.org> remote.r2@far.example 501 89 192.0.2.9_accepted_message./Remote_host_said:_250_ok/",
    "d k 1700000002.000001 1700000002.000002 1700000002.100000 300 <c@x.org> local.u2@here.example 503 0 did_0+0+1/",
    "m 1700000002.000001 1700000002.200000 300 1 0 0 <c@x.org> 503 0",
    "d z 1700000000.000002 1700086400.000000 1700086401.000000 1000 <a@x.org> remote.r1@far.example 501 89 Connected_to_192.0.2.7_but_greeting_failed./Remote_host_said:_421_busy/",
    "d d 1700000000.000002 1700172800.000000 1700172801.000000 1000 <a@x.org> remote.r1@far.example 501 89 192.0.2.7_does_not_like_recipient./Remote_host_said:_550_5.1.1_no_such_user/Giving_up_on_192.0.2.7./",
    "d k 1700000000.000002 1700172800.500000 1700172801.000050 1000 <a@x.org> remote.r3@far.example 501 89 192.0.2.8_accepted_message./Remote_host_said:_250_ok/",
    "m 1700000000.000002 1700172801.000200 1000 2 1 2 <a@x.org> 501 89",
    "d d 1700172801.000400 1700172801.000500 1700172802.000000 1500 <> remote.a@x.org 600 89 Sorry,_I_couldn't_find_any_host_named_x.org._(#5.1.2)/",
    "m 1700172801.000400 1700172802.000200 1500 0 1 0 <> 600 89",
    "d d 1700172802.000400 1700172802.000500 1700172803.000000 1900 <#@[]> local.postmaster@here.example 601 89 Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/",
    "m 1700172802.000400 1700172803.000200 1900 0 1 0 <#@[]> 601 89",
]


def test_lifecycle_interleaving_reuse_restart_days_bounces() -> None:
    out = mails(correlate(records("qmail_lifecycle.txt")))
    assert matchup_lines(out) == LIFECYCLE
    by = {(m["msg"], m["size"]): m for m in out}
    assert len(out) == 5 and all(m["flags"] == [] for m in out)
    long = by[(100, 1000)]
    assert long["queue_time_s"] == 172801.000198  # two days in the queue
    r1, r2, r3 = long["recipients"]
    assert [a["result"] for a in r1["attempts"]] == ["deferral", "deferral", "failure"]
    assert [a["epoch"] for a in r1["attempts"]] == [0, 1, 1]  # restarted between attempts
    assert r1["result"] == "failure" and r1["dsn"] == "5.1.1" and r1["smtp_code"] == 550
    assert r2["result"] == "success" and r2["relay_ip"] == "192.0.2.9"
    # r3's delivery 5 was open when qmail-send exited: interrupted, and the new
    # epoch's "delivery 5" result (another delivery) is not taken for it.
    assert r3["attempts"][0] == {"delivery": 5, "epoch": 0, "start_unix_ns": 1700000002000003000,
                                 "result": None, "interrupted": True}
    assert r3["attempts"][1]["relay_ip"] == "192.0.2.8" and r3["n_attempts"] == 2
    bounce, double = by[(300, 1500)], by[(301, 1900)]
    assert bounce["bounce_of"]["msg"] == 100 and bounce["bounce_kind"] == "bounce"
    assert double["bounce_of"]["msg"] == 300 and double["bounce_kind"] == "double_bounce"
    assert double["bounce_discarded"] == "triple"


def test_state_survives_restart_at_every_line() -> None:
    """A message open across a shipper restart is still one record (to_state/from_state)."""
    recs = records("qmail_lifecycle.txt")
    whole = correlate(recs)
    for cut in range(1, len(recs)):
        first = Correlator()
        out = first.feed(recs[:cut])
        state = orjson.loads(orjson.dumps(first.to_state()))  # really JSON
        second = Correlator.from_state(state)
        out += second.feed(recs[cut:]) + second.finish()
        assert out == whole, cut


def test_incomplete_max_age_and_cap() -> None:
    recs = records("qmail_lifecycle.txt")
    # Stop before msg 100 ends: it is open, a day after its birth.
    upto = next(i for i, r in enumerate(recs) if r.get("time_unix_ns") == 1700086401000000000)
    c = Correlator()
    c.feed(recs[:upto + 1])
    assert c.flush(1700086401000000000) == []  # younger than max_age
    late = c.flush(1700086401000000000 + 8 * 86400 * 10**9)
    (m,) = late
    assert m["msg"] == 100 and m["flags"] == ["incomplete"] and m["incomplete_reason"] == "max_age"
    assert m["queue_time_s"] is None and m["recipients"][0]["result"] == "deferral"
    # Cap: at most one open message; the older is pushed out, flagged incomplete.
    from shipper.track.correlator import CorrelatorOptions
    opts = CorrelatorOptions(qmail=QmailOptions(max_open=1))
    c = Correlator(opts)
    out = c.feed(recs[:6])
    assert [(m["msg"], m["incomplete_reason"]) for m in out] == [(100, "evicted")]
    assert len(c.qmail.mails) == 1
    rest = c.finish()
    assert [m["incomplete_reason"] for m in rest] == ["open_at_end"]


def test_partial_and_orphans() -> None:
    recs = records("qmail_lifecycle.txt")
    c = Correlator()
    out = c.feed(recs[9:])  # from "delivery 1: deferral" on: starts are missing
    out += c.finish()
    m100 = [m for m in out if m["msg"] == 100]
    assert m100 and "partial" in m100[0]["flags"]
    assert c.qmail.orphans >= 2


def test_lines_read_again_are_not_fed_twice():
    """After a corrupt checkpoint the daemon reads a file again from its start: the
    lines its correlator has seen must not open the mail a second time (an
    'id_reused' record with the same event id as the real one)."""
    from shipper.track.correlator import CorrelatorOptions

    lines = [b"@400000005a49ba3400000000 new msg 101",
             b"@400000005a49ba3400000001 info msg 101: bytes 300 from <a@b.c> qp 7 uid 0",
             b"@400000005a49ba3400000002 starting delivery 1: msg 101 to remote x@y.z",
             b"@400000005a49ba3400000003 delivery 1: success: ok/",
             b"@400000005a49ba3400000004 end msg 101"]
    offsets = [0, 40, 120, 190, 240]
    recs = [r.to_dict() for r in LineParser(file_id="f1").parse_batch(lines, offsets)]
    corr = Correlator(CorrelatorOptions(skip_reread=True))
    out = corr.feed(recs[:3])
    corr = Correlator.from_state(orjson.loads(orjson.dumps(corr.to_state())),
                                 CorrelatorOptions(skip_reread=True))
    out += corr.feed(recs[:2])  # read again from the start
    out += corr.feed(recs)
    [mail] = mails(out)
    assert "incomplete" not in mail["flags"] and mail["recipients"][0]["result"] == "success"
    # reading files once (track, stats), two inputs may share a file id: nothing is skipped
    assert len(mails(Correlator().feed(recs + recs))) == 2


def test_indimail_qident_delivery_ids_make_one_attempt_each():
    # indimail's "D.QIDENT" ids (qscheduler's $QIDENT): delivery stays an int in every
    # record and summary, the qident beside it
    lines = [
        "@4000000052fafd8d00000001 new msg 100 queue5",
        "@4000000052fafd8d00000002 info msg 100: bytes 300 from <a@example.org> qp 7 uid 89 queue5",
        "@4000000052fafd8d00000003 starting delivery 12.q5x: msg 100 to remote b@example.net queue5",
        "@4000000052fafd8d00000004 starting delivery 13.q5x: msg 100 to local c@example.com queue5",
        "@4000000052fafd8d00000005 delivery 12.q5x: success: 192.0.2.9_accepted_message./"
        "Remote_host_said:_250_ok/ queue5",
        "@4000000052fafd8d00000006 delivery 13.q5x: deferral: Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/ queue5",
        "@4000000052fafd8d00000007 end msg 100 queue5",
    ]
    parser = LineParser(source="current", file_id="0123456789abcdef")
    recs = [parser.parse(ln.encode(), i * 90).to_dict() for i, ln in enumerate(lines)]
    assert [r.get("delivery") for r in recs[2:6]] == [12, 13, 12, 13]
    assert {r.get("delivery_qident") for r in recs[2:6]} == {"q5x"}
    (mail,) = [o for o in correlate(recs) if o["event"] == "mail"]
    by = {r["rcpt_to"]: r for r in mail["recipients"]}
    remote, local = by["b@example.net"], by["c@example.com"]
    assert remote["result"] == "success" and local["result"] == "deferral"
    assert remote["attempts"][0]["delivery"] == 12 and remote["attempts"][0]["delivery_qident"] == "q5x"
    assert local["attempts"][0]["delivery"] == 13 and local["attempts"][0]["delivery_qident"] == "q5x"


# The plover.com lines of a forward (tests/fixtures/samples/hop_mjd_plover_qmail_forward.txt,
# qmail-local's "did_0+1+0/qp_31067/") and the forwarded copy's lines as qmail-send prints
# every message's: its "info msg … qp 31067" comes before or after the delivery's report.
_FORWARD = Path(__file__).parent / "fixtures" / "samples" / "hop_mjd_plover_qmail_forward.txt"
_COPY = [
    "@400000003e3829113000000a new msg 706431",
    "@400000003e3829113000000b info msg 706431: bytes 2901 from <boehm5@email.com> qp 31067 uid 1001",
]
_COPY_DELIVERY = [
    "@400000003e3829120800000a starting delivery 190553: msg 706431 to remote tpj@example.org",
    "@400000003e3829140800000b delivery 190553: success: 192.0.2.7_accepted_message./Remote_host_said:_250_ok/",
    "@400000003e3829140800000c end msg 706431",
]


def _forward_lines(copy_first: bool) -> list[str]:
    parent = [ln for ln in _FORWARD.read_text().splitlines() if ln.startswith("@")]
    # the copy's lines stamped before or after "delivery 190552: success: did_0+1+0/qp_31067/"
    copy = _COPY if copy_first else [ln.replace("3e382911300000", "3e382911310000") for ln in _COPY]
    lines = sorted(parent + copy, key=lambda ln: ln[:25]) + _COPY_DELIVERY
    assert (lines.index(copy[1]) < lines.index(parent[4])) is copy_first
    return lines


def _mails_of(lines: list[str]) -> dict[int, dict[str, Any]]:
    parser = LineParser(source="current", file_id="0123456789abcdef")
    recs = [parser.parse(ln.encode(), i * 100).to_dict() for i, ln in enumerate(lines)]
    return {m["msg"]: m for m in mails(correlate(recs))}


def test_forwarded_copy_linked_to_its_mail_and_recipient_in_either_order() -> None:
    for copy_first in (True, False):
        by_msg = _mails_of(_forward_lines(copy_first))
        parent, copy = by_msg[706430], by_msg[706431]
        (r,) = parent["recipients"]
        assert r["rcpt_to"] == "guitar-tpj-regex@plover.com" and r["result"] == "success"
        assert r["forward_qp"] == 31067 and r["forward_msg"] == 706431, copy_first
        assert copy["forward_of"] == {"msg": 706430, "qp": 31064,
                                      "rcpt_to": "guitar-tpj-regex@plover.com",
                                      "event_id": parent["event_id"]}
        assert copy["recipients"][0]["rcpt_to"] == "tpj@example.org"
        assert "forward_of" not in parent and "session" not in copy


def test_forward_link_needs_the_copy_within_an_hour() -> None:
    # qp is a pid: a message with that qp a day later is another one
    parent = [ln for ln in _FORWARD.read_text().splitlines() if ln.startswith("@")]
    later = [ln.replace("@400000003e3829", "@400000003e3983") for ln in _COPY + _COPY_DELIVERY]
    by_msg = _mails_of(parent + later)
    assert by_msg[706430]["recipients"][0]["forward_qp"] == 31067
    assert "forward_msg" not in by_msg[706430]["recipients"][0]
    assert "forward_of" not in by_msg[706431]


def test_forward_link_survives_a_restart_at_every_line() -> None:
    for copy_first in (True, False):
        lines = _forward_lines(copy_first)
        parser = LineParser(source="current", file_id="0123456789abcdef")
        recs = [parser.parse(ln.encode(), i * 100).to_dict() for i, ln in enumerate(lines)]
        whole = correlate(recs)
        assert any("forward_of" in m for m in mails(whole))
        for cut in range(1, len(recs)):
            first = Correlator()
            out = first.feed(recs[:cut])
            second = Correlator.from_state(orjson.loads(orjson.dumps(first.to_state())))
            out += second.feed(recs[cut:]) + second.finish()
            assert out == whole, (copy_first, cut)


def test_only_a_local_delivery_forwards() -> None:
    # qmail-local's report; a remote server's reply that looks like it is only text
    lines = [
        "@400000003e38291000000001 new msg 5",
        "@400000003e38291000000002 info msg 5: bytes 10 from <a@x.org> qp 40 uid 89",
        "@400000003e38291000000003 starting delivery 9: msg 5 to remote b@y.org",
        "@400000003e38291000000004 delivery 9: success: 192.0.2.1_said_/did_0+1+0/qp_41/_ok/",
        "@400000003e38291000000005 end msg 5",
    ]
    (mail,) = _mails_of(lines).values()
    assert "forward_qp" not in mail["recipients"][0]


def test_a_todo_file_taken_up_again_is_one_mail() -> None:
    """qmail-send logs ``new msg``/``info msg`` each time it takes up a todo/ file (NQ
    qmail-send.c todo_do); one it could not finish is taken up again: the same message,
    not an inode reused after a lost ``end msg``. Another qp is another message."""
    out = mails(correlate(records("qmail_todo_again.txt")))
    assert [(m["msg"], m["mail_from"], m["flags"], m.get("incomplete_reason")) for m in out] == [
        (5000, "a@x.org", [], None), (5100, "b@x.org", [], None),
        (5200, "c@x.org", ["incomplete"], "id_reused"), (5200, "d@x.org", [], None)]
    first, killed = out[0], out[1]
    assert first["birth"] == "2024-05-24T02:48:22.001048576Z"  # the first info msg
    assert first["queue_time_s"] == 11.001049 and first["result"] == "success"
    assert len(first["event_ids"]) == 7  # both new msg / info msg pairs are its lines
    (r,) = killed["recipients"]
    assert r["result"] == "success" and r["n_attempts"] == 1 and r["attempts"][0]["epoch"] == 1
    assert out[2]["recipients"] == [] and out[3]["qp"] == 7100


def test_a_queue_bigger_than_the_cap_is_not_summarised_again_at_every_retry() -> None:
    """With more messages in the queue than max_open, the oldest is pushed out
    (summarised ``evicted``); its next retry took it in again as a partial message,
    which pushed out the next oldest, whose retry pushed out the next: a summary per
    retry of every deferred message, for a week. And an ``end msg`` of a message not
    tracked pushed out a tracked one before its bare record went out."""
    def lab(sec: int) -> str:
        return f"@{0x4000000065000000 + sec:016x}00000000"
    lines = []
    for i in range(3):  # three messages deferred, the cap is two
        lines += [f"{lab(i)} new msg {100 + i}",
                  f"{lab(i)} info msg {100 + i}: bytes 10 from <a@x.org> qp {50 + i} uid 89"]
    d = 0
    for hour in range(1, 4):  # qmail-send retries each, hour after hour
        for i in range(3):
            d += 1
            lines += [f"{lab(hour * 3600 + i)} starting delivery {d}: msg {100 + i} to remote r@far.example",
                      f"{lab(hour * 3600 + i)} delivery {d}: deferral: Sorry,_I_wasn't_able_to_establish_an_SMTP_connection._(#4.4.1)/"]
    lines += [f"{lab(5 * 3600)} end msg 100"]  # the one pushed out ends (it bounced, say)
    parser = LineParser(source="send", file_id="0123456789abcdef")
    recs = [parser.parse(ln.encode() + b"\n", n * 100).to_dict() for n, ln in enumerate(lines)]
    c = Correlator(CorrelatorOptions(qmail=QmailOptions(max_open=2)))
    out = c.feed(recs)
    assert [(m["msg"], m.get("incomplete_reason"), m["flags"]) for m in out] == [
        (100, "evicted", ["incomplete"]), (100, None, ["partial"])]
    rest = c.finish()
    assert [(m["msg"], m["recipients"][0]["n_attempts"]) for m in rest] == [(101, 3), (102, 3)]


def test_forward_whose_copy_never_shows_is_not_waited_for_past_the_hour() -> None:
    """A forward's copy is linked only within an hour (qp is a pid): one that never
    showed (its lines in a log not read, or qmail-queue failed) was waited for in the
    state until 100,000 others pushed it out, in a daemon for ever. The plover.com
    forward without its copy; the input's clock goes on with a later line of it."""
    parent = [ln for ln in _FORWARD.read_text().splitlines() if ln.startswith("@")]
    parser = LineParser(source="current", file_id="0123456789abcdef")
    recs = [parser.parse(ln.encode(), i * 100).to_dict() for i, ln in enumerate(parent)]
    # the same status line, 59 min and then 61 min after the forward's report (3e382911)
    later = [parser.parse(f"@400000003e38{0x2911 + d:04x}00000000 status: local 0/5 remote 0/10"
                          .encode(), 10_000 + d).to_dict() for d in (59 * 60, 61 * 60)]
    corr = Correlator()
    corr.feed(recs + later[:1])
    corr.flush()
    assert [k.split("\x00")[1] for k, _ in corr.to_state()["qmail"]["forwards"]] == ["31067"]
    corr.feed(later[1:])
    corr.flush()
    assert corr.to_state()["qmail"]["forwards"] == []
    assert corr.qmail.forwards == {}


def test_bounce_whose_message_never_shows_is_not_waited_for_past_the_hour() -> None:
    """The same for a bounce: bayour.com's log has two 'bounce msg … qp N' whose
    bounce messages are not in it; they stayed in the state."""
    path = Path(__file__).parent / "fixtures" / "track" / "bayour_perl_comments_qmail-send_accustamp.txt"
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    parser = LineParser(source="current", file_id="0123456789abcdef")
    recs = [parser.parse(ln.encode(), i * 100).to_dict() for i, ln in enumerate(lines)]
    corr = Correlator()
    corr.feed(recs)
    bounced_ns = 1054194596_081499000  # "bounce msg 161214 qp 24162"
    corr.flush(now_ns=bounced_ns + 3599 * 10**9)
    assert [k.split("\x00")[1] for k, _ in corr.to_state()["qmail"]["bounces"]] == ["24162", "981"]
    corr.flush(now_ns=bounced_ns + 3601 * 10**9)
    assert corr.to_state()["qmail"]["bounces"] == []


def test_recipient_listed_twice_is_two_recipients_as_qmailanalog_counts() -> None:
    """qmail keeps a recipient given twice (RCPT TO twice, or two aliases to one
    address): qmail-send delivers it twice, at once. qmailanalog counts per delivery
    (matchup's nk, zoverall's ddelay over 'd k' lines, zrecipients' mess): 2. The
    tracker merged the two into one recipient with two attempts, so stats said one
    recipient, one outcome, one delay. bayour.com's first message with its delivery
    doubled (a second delivery id, started and ended as qmail-send logs them)."""
    from shipper.track.report import Stats
    path = Path(__file__).parent / "fixtures" / "track" / "bayour_perl_comments_qmail-send_accustamp.txt"
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")][:7]
    lines[3:3] = ["1054189746.123970 starting delivery 120: msg 161214 to remote turbo@tripnet.se"]
    lines[6:6] = ["1054189746.380000 delivery 120: success: 195.100.21.7_accepted_message./"
                  "Remote_host_said:_250_OK_id=19LGuQ-0003OK-00/"]
    parser = LineParser(source="current", file_id="0123456789abcdef")
    recs = [parser.parse(ln.encode(), i * 100).to_dict() for i, ln in enumerate(lines)]
    (m,) = mails(correlate(recs))
    assert [(r["rcpt_to"], r["result"], r["n_attempts"], r["attempts"][0]["delivery"])
            for r in m["recipients"]] == [("turbo@tripnet.se", "success", 1, 119),
                                          ("turbo@tripnet.se", "success", 1, 120)]
    assert (m["n_recipients"], m["n_success"]) == (2, 2)
    st = Stats()
    st.add(m)
    d = st.to_dict()
    assert (d["recipients"], d["completed_recipients"], d["deliveries"]["success"]) == (2, 2, 2)
    assert d["recipient_outcomes"] == {"success": 2}
    assert d["top_recipients"] == [{"recipient": "turbo@tripnet.se", "messages": 2}]
    assert d["delay_s"]["count"] == 2  # zoverall's ddelay: per 'd k' line
    assert len(matchup_lines([m])) == 3  # two d lines, one m line


def test_recipient_listed_twice_and_deferred_is_still_two_recipients_at_each_retry() -> None:
    """Both copies of a doubled recipient deferred, retried together, then delivered:
    each retry found the copy the address pointed to busy and made a new recipient
    (4 recipients for 2, attempts split across them: 119 | 120 121 | 122 123 | 124).
    bayour.com's first message, its delivery doubled and deferred twice (the lines as
    qmail-send logs them, times and ids moved on)."""
    died = "deferral: Connected_to_195.100.21.7_but_connection_died._(#4.4.2)/"
    ok = "success: 195.100.21.7_accepted_message./Remote_host_said:_250_OK_id=19LGuQ-0003OJ-00/"
    lines = ["1054189746.123136 new msg 161214",
             "1054189746.123151 info msg 161214: bytes 830 from <turbo@bayour.com> qp 6190 uid 1000"]
    for t, first, result in ((1054189746, 119, died), (1054190146, 121, died), (1054190946, 123, ok)):
        lines += [f"{t}.123958 starting delivery {first}: msg 161214 to remote turbo@tripnet.se",
                  f"{t}.123970 starting delivery {first + 1}: msg 161214 to remote turbo@tripnet.se",
                  f"{t}.373645 delivery {first}: {result}",
                  f"{t}.373700 delivery {first + 1}: {result}"]
    lines.append("1054190946.374332 end msg 161214")
    parser = LineParser(source="current", file_id="0123456789abcdef")
    recs = [parser.parse(ln.encode(), i * 100).to_dict() for i, ln in enumerate(lines)]
    (m,) = mails(correlate(recs))
    assert [(r["result"], [a["delivery"] for a in r["attempts"]]) for r in m["recipients"]] == [
        ("success", [119, 122, 124]), ("success", [120, 121, 123])]  # a retry takes a free copy
    assert (m["n_recipients"], m["n_success"]) == (2, 2)
