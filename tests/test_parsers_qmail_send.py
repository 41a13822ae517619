"""qmail-send parser (shipper.parsers.qmail_send) through the full LineParser path.

Every qmail-send / qmail-daemon line of the real samples in tests/fixtures/samples
is asserted field by field; code-literal lines (alerts, warnings, bounces, report
mangled, indimail variants) come from the formats reference (qmail-send.c, qsutil.c,
indimail qmail-send.c / slowq-send.c).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.parse import LineParser
from shipper.parsers import qmail_send

SAMPLES_DIR = Path(__file__).parent / "fixtures" / "samples"
# indimail's docs write "@..." for an elided TAI64N label: give those lines a real one.
ELIDED_STAMP = "@4000000052fafd8d3298434c "
OTHER = None  # a line of another program (asserted in its own test file)
MINE = {"qmail-send", "qmail-daemon"}


def sample_lines(name: str) -> list[str]:
    lines = (SAMPLES_DIR / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# source: ")
    out = []
    for line in lines[1:]:
        if not line.strip() or line.startswith("#"):
            continue
        out.append(ELIDED_STAMP + line[5:] if line.startswith("@... ") else line)
    return out


def parse(line: str):
    rec = LineParser().parse(line.encode())
    return rec.program, rec.event, rec.pid, rec.fields


SAMPLES: dict[str, list] = {
    "bayour_perl_comments_qmail-send_accustamp": [
        ('qmail-send', 'new_msg', None, {'msg': 161214}),
        ('qmail-send', 'info_msg', None,
         {'msg': 161214, 'size': 830, 'mail_from': 'turbo@bayour.com', 'qp': 6190, 'uid': 1000}),
        ('qmail-send', 'starting_delivery', None,
         {'delivery': 119, 'msg': 161214, 'channel': 'remote', 'rcpt_to': 'turbo@tripnet.se'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 1, 'remote_max': 20}),
        ('qmail-send', 'delivery', None,
         {'delivery': 119, 'result': 'success', 'text': '195.100.21.7 accepted message.\nRemote host said: 250 OK id=19LGuQ-0003OJ-00', 'text_raw': '195.100.21.7_accepted_message./Remote_host_said:_250_OK_id=19LGuQ-0003OJ-00/', 'relay_ip': '195.100.21.7', 'smtp_code': 250}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20}),
        ('qmail-send', 'end_msg', None, {'msg': 161214}),
        ('qmail-send', 'new_msg', None, {'msg': 161214}),
        ('qmail-send', 'info_msg', None,
         {'msg': 161214, 'size': 1676, 'mail_from': 'turbo@bayour.com', 'qp': 6206, 'uid': 64014}),
        ('qmail-send', 'starting_delivery', None,
         {'delivery': 120, 'msg': 161214, 'channel': 'local', 'rcpt_to': 'turbo@bayour.com'}),
        ('qmail-send', 'status', None,
         {'local_active': 1, 'local_max': 10, 'remote_active': 0, 'remote_max': 20}),
        ('qmail-send', 'delivery', None,
         {'delivery': 120, 'result': 'success', 'text': 'did 0+0+1', 'text_raw': 'did_0+0+1/'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20}),
        ('qmail-send', 'end_msg', None, {'msg': 161214}),
        ('qmail-send', 'new_msg', None, {'msg': 161214}),
        ('qmail-send', 'info_msg', None,
         {'msg': 161214, 'size': 869, 'mail_from': 'turbo@bayour.com', 'qp': 24150, 'uid': 1000}),
        ('qmail-send', 'starting_delivery', None,
         {'delivery': 183, 'msg': 161214, 'channel': 'remote', 'rcpt_to': 'fjkdasljf@nocrew.org'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 1, 'remote_max': 20}),
        ('qmail-send', 'delivery', None,
         {'delivery': 183, 'result': 'failure', 'text': '213.242.147.30 does not like recipient.\nRemote host said: 550 Unknown local part fjkdasljf in <fjkdasljf@nocrew.org>\nGiving up on 213.242.147.30.', 'text_raw': '213.242.147.30_does_not_like_recipient./Remote_host_said:_550_Unknown_local_part_fjkdasljf_in_<fjkdasljf@nocrew.org>/Giving_up_on_213.242.147.30./', 'relay_ip': '213.242.147.30', 'smtp_code': 550}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20}),
        ('qmail-send', 'bounce_msg', None, {'msg': 161214, 'qp': 24162}),
        ('qmail-send', 'end_msg', None, {'msg': 161214}),
        ('qmail-send', 'new_msg', None, {'msg': 161214}),
        ('qmail-send', 'info_msg', None,
         {'msg': 161214, 'size': 7308, 'mail_from': 'baby3@3333.3utilities.com', 'qp': 976, 'uid': 64014}),
        ('qmail-send', 'starting_delivery', None,
         {'delivery': 108, 'msg': 161214, 'channel': 'local', 'rcpt_to': '87smtjy4le.fsf@papadoc.bayour.com'}),
        ('qmail-send', 'status', None,
         {'local_active': 1, 'local_max': 10, 'remote_active': 0, 'remote_max': 20}),
        ('qmail-send', 'delivery', None,
         {'delivery': 108, 'result': 'failure', 'text': 'Sorry, no mailbox here by that name. (#5.1.1)', 'text_raw': 'Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/', 'dsn': '5.1.1'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20}),
        ('qmail-send', 'bounce_msg', None, {'msg': 161214, 'qp': 981}),
        ('qmail-send', 'end_msg', None, {'msg': 161214}),
    ],
    "djb_multilog_doc_jp_examples": [
        OTHER,
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20}),
    ],
    "fehcom_sqmail_logging_chapter": [
        ('qmail-send', 'info_msg', None,
         {'msg': 28857444, 'size': 7816, 'mail_from': 'feh@fehcom.de', 'qp': 17808, 'uid': 7005}),
        ('qmail-send', 'starting_delivery', None,
         {'delivery': 1356, 'msg': 28857444, 'channel': 'remote', 'rcpt_to': 'x@y.de'}),
        ('qmail-send', 'status', None,
         {'local_active': 1, 'local_max': 10, 'remote_active': 1, 'remote_max': 100}),
        ('qmail-send', 'delivery', None,
         {'delivery': 1356, 'result': 'success', 'text': '1.2.3.4 TLS transmitted message accepted.\nRemote host said: 250 OK id=1eW731-0004n7-G7', 'text_raw': '1.2.3.4_TLS_transmitted_message_accepted./Remote_host_said:_250_OK_id=1eW731-0004n7-G7/', 'relay_ip': '1.2.3.4', 'smtp_code': 250}),
        ('qmail-send', 'status', None,
         {'local_active': 1, 'local_max': 10, 'remote_active': 0, 'remote_max': 100}),
        ('qmail-send', 'end_msg', None, {'msg': 28857444}),
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
    ],
    "fluent-plugin-tai64n_parser_README": [
        ('qmail-send', 'new_msg', None, {'msg': 3890}),
        ('qmail-send', 'info_msg', None,
         {'msg': 3890, 'size': 372, 'mail_from': 'root@**********.pb', 'qp': 31835, 'uid': 0}),
        ('qmail-send', 'starting_delivery', None,
         {'delivery': 9, 'msg': 3890, 'channel': 'remote', 'rcpt_to': 'glidenote@********.co.jp'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 120, 'remote_active': 1, 'remote_max': 60}),
        ('qmail-send', 'delivery', None,
         {'delivery': 9, 'result': 'success', 'text': '***.***.***.*** accepted message.\nRemote host said: 250 ok 1392180611 qp 10394', 'text_raw': '***.***.***.***_accepted_message./Remote_host_said:_250_ok_1392180611_qp_10394/', 'smtp_code': 250}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 120, 'remote_active': 0, 'remote_max': 60}),
        ('qmail-send', 'end_msg', None, {'msg': 3890}),
    ],
    "indimail_docs_samples": [
        OTHER,
        OTHER,
        # README.qhpsi: ClamAV's verdict on a queued mail, in ClamAV's "PATH: NAME FOUND"
        ('clamd', 'virus_found', None, {'virus': 'Worm.Klez.H', 'path': '/var/indimail/queue/queue3/mess/4/89439'}),
        (None, "unparsed", None, {}),
        (None, "unparsed", None, {}),
        (None, "unparsed", None, {}),
        (None, "unparsed", None, {}),
        OTHER,
        OTHER,
        ('clamd', 'virus_found', None, {'virus': 'Worm.Klez.H', 'path': '/var/indimail/queue/queue3/mess/4/89543'}),
        OTHER,
        (None, "unparsed", None, {}),
        (None, "unparsed", None, {}),
        ('qmail-send', 'delivery', None,
         {'delivery': 4, 'result': 'success', 'text': 'did 1+0+0', 'text_raw': 'did_1+0+0/'}),
        ('qmail-send', 'new_msg', None, {'msg': 19287}),
        (None, "unparsed", None, {}),
        ('qmail-send', 'new_msg', None, {'msg': 9101014}),
        (None, "unparsed", None, {}),
        ('qmail-send', 'new_msg', None, {'msg': 19287}),
        (None, "unparsed", None, {}),
    ],
    "indimail_readme_multiqueue_tai64nlocal": [
        ('qmail-daemon', 'daemon', None, {'text': 'qStart/qCount 1/5'}),
        ('qmail-daemon', 'daemon', None,
         {'text': 'pid 187, queue /var/indimail/queue/queue1 started', 'queue': 'queue1'}),
        ('qmail-daemon', 'daemon', None,
         {'text': 'pid 188, queue /var/indimail/queue/queue2 started', 'queue': 'queue2'}),
        ('qmail-daemon', 'daemon', None,
         {'text': 'pid 189, queue /var/indimail/queue/queue3 started', 'queue': 'queue3'}),
        ('qmail-daemon', 'daemon', None,
         {'text': 'pid 190, queue /var/indimail/queue/queue4 started', 'queue': 'queue4'}),
        ('qmail-daemon', 'daemon', None,
         {'text': 'pid 191, queue /var/indimail/queue/queue5 started', 'queue': 'queue5'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20, 'queue': 'queue2'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20, 'queue': 'queue5'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20, 'queue': 'queue4'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20, 'queue': 'queue1'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20, 'queue': 'queue3'}),
        ('qmail-send', 'new_msg', None, {'msg': 100926020, 'queue': 'queue5'}),
        ('qmail-send', 'info_msg', None,
         {'msg': 100926020, 'size': 814, 'mail_from': 'root@indimail.org', 'qp': 555, 'uid': 0, 'queue': 'queue5'}),
        ('qmail-send', 'delivery_account', None,
         {'channel': 'local', 'mail_from': 'root@indimail.org', 'rcpt_to': 'postmaster@example.com', 'size': 814, 'queue': 'queue5'}),
        ('qmail-send', 'starting_delivery', None,
         {'delivery': 1, 'msg': 100926020, 'channel': 'local', 'rcpt_to': 'example.com-postmaster@example.com', 'queue': 'queue5'}),
        ('qmail-send', 'status', None,
         {'local_active': 1, 'local_max': 10, 'remote_active': 0, 'remote_max': 20, 'queue': 'queue5'}),
        ('qmail-send', 'delivery', None,
         {'delivery': 1, 'result': 'success', 'text': 'did 0+0+1', 'text_raw': 'did_0+0+1/', 'queue': 'queue5'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20, 'queue': 'queue5'}),
        ('qmail-send', 'end_msg', None, {'msg': 100926020, 'queue': 'queue5'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20, 'queue': 'queue2'}),
        OTHER,
    ],
    "notqmail_TEST.deliver": [
        ('qmail-send', 'new_msg', None, {'msg': 53}),
        ('qmail-send', 'info_msg', None,
         {'msg': 53, 'size': 246, 'mail_from': 'me@domain', 'qp': 20345, 'uid': 666}),
        ('qmail-send', 'starting_delivery', None,
         {'delivery': 1, 'msg': 53, 'channel': 'local', 'rcpt_to': 'me@domain'}),
        ('qmail-send', 'status', None,
         {'local_active': 1, 'local_max': 10, 'remote_active': 0, 'remote_max': 20}),
        ('qmail-send', 'delivery', None,
         {'delivery': 1, 'result': 'success', 'text': 'did 1+0+0', 'text_raw': 'did_1+0+0/'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20}),
        ('qmail-send', 'end_msg', None, {'msg': 53}),
        ('qmail-send', 'new_msg', None, {'msg': 53}),
        ('qmail-send', 'info_msg', None,
         {'msg': 53, 'size': 246, 'mail_from': 'me@domain', 'qp': 20351, 'uid': 666}),
        ('qmail-send', 'starting_delivery', None,
         {'delivery': 2, 'msg': 53, 'channel': 'local', 'rcpt_to': 'nonexistent@domain'}),
        ('qmail-send', 'status', None,
         {'local_active': 1, 'local_max': 10, 'remote_active': 0, 'remote_max': 20}),
        ('qmail-send', 'delivery', None,
         {'delivery': 2, 'result': 'failure', 'text': 'No such address.  #5.1.1 ', 'text_raw': 'No_such_address.__#5.1.1_/', 'dsn': '5.1.1'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20}),
        ('qmail-send', 'bounce_msg', None, {'msg': 53, 'qp': 20357}),
        ('qmail-send', 'end_msg', None, {'msg': 53}),
        ('qmail-send', 'new_msg', None, {'msg': 54}),
        ('qmail-send', 'info_msg', None,
         {'msg': 54, 'size': 743, 'mail_from': '', 'qp': 20357, 'uid': 666}),
        ('qmail-send', 'starting_delivery', None,
         {'delivery': 3, 'msg': 54, 'channel': 'local', 'rcpt_to': 'me@domain'}),
        ('qmail-send', 'status', None,
         {'local_active': 1, 'local_max': 10, 'remote_active': 0, 'remote_max': 20}),
        ('qmail-send', 'delivery', None,
         {'delivery': 3, 'result': 'success', 'text': 'did 1+0+0', 'text_raw': 'did_1+0+0/'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20}),
        ('qmail-send', 'end_msg', None, {'msg': 54}),
        ('qmail-send', 'new_msg', None, {'msg': 53}),
        ('qmail-send', 'info_msg', None,
         {'msg': 53, 'size': 246, 'mail_from': 'me@domain', 'qp': 20372, 'uid': 666}),
        ('qmail-send', 'starting_delivery', None,
         {'delivery': 4, 'msg': 53, 'channel': 'remote', 'rcpt_to': 'me@wherever'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 1, 'remote_max': 20}),
        ('qmail-send', 'delivery', None,
         {'delivery': 4, 'result': 'success', 'text': '1.2.3.4 accepted message.\n...', 'text_raw': '1.2.3.4_accepted_message./...', 'relay_ip': '1.2.3.4'}),
        ('qmail-send', 'status', None,
         {'local_active': 0, 'local_max': 10, 'remote_active': 0, 'remote_max': 20}),
        ('qmail-send', 'end_msg', None, {'msg': 53}),
    ],
    "hop_mjd_plover_qmail_forward": [
        ('qmail-send', 'new_msg', None, {'msg': 706430}),
        ('qmail-send', 'info_msg', None,
         {'msg': 706430, 'size': 2737, 'mail_from': 'boehm5@email.com', 'qp': 31064, 'uid': 1001}),
        ('qmail-send', 'starting_delivery', None,
         {'delivery': 190552, 'msg': 706430, 'channel': 'local', 'rcpt_to': 'guitar-tpj-regex@plover.com'}),
        ('qmail-send', 'status', None,
         {'local_active': 1, 'local_max': 5, 'remote_active': 2, 'remote_max': 10}),
        # qmail-local forwarded the message: "qp_31067" is the qp of the copy it queued
        ('qmail-send', 'delivery', None,
         {'delivery': 190552, 'result': 'success', 'text': 'did 0+1+0\nqp 31067',
          'text_raw': 'did_0+1+0/qp_31067/', 'qp': 31067}),
        ('qmail-send', 'status', None,
         {'local_active': 1, 'local_max': 5, 'remote_active': 2, 'remote_max': 10}),
        ('qmail-send', 'end_msg', None, {'msg': 706430}),
    ],
    "notqmail_issue244": [
        ('qmail-send', 'delivery', None,
         {'delivery': 245, 'result': 'failure', 'text': 'Unable to run qmail-remote.', 'text_raw': 'Unable_to_run_qmail-remote./'}),
    ],
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_real_samples_field_by_field(name: str) -> None:
    lines = sample_lines(name)
    expected = SAMPLES[name]
    assert len(lines) == len(expected)
    for line, exp in zip(lines, expected, strict=True):
        got = parse(line)
        if exp is OTHER:
            assert got[0] not in MINE, line
        else:
            assert got == exp, line


# Code literals: (program text, event, fields).
LITERALS = [
    ("status: exiting", "status_exiting", {}),
    ("status: local 3/10 remote 17/20 exitasap", "status",
     {"local_active": 3, "local_max": 10, "remote_active": 17, "remote_max": 20, "exitasap": True}),
    ("status: local 2/10 (held) remote 0/20 delayed jobs=3 queue1 exitasap", "status",
     {"local_active": 2, "local_max": 10, "remote_active": 0, "remote_max": 20, "exitasap": True,
      "queue": "queue1", "held": "local", "delayed_jobs": 3}),
    ("status: local 0/10 (held) remote 1/20 (held) queue4", "status",
     {"local_active": 0, "local_max": 10, "remote_active": 1, "remote_max": 20,
      "queue": "queue4", "held": "local,remote"}),
    ("triple bounce: discarding bounce/457123", "triple_bounce", {"msg": 457123}),
    ("double bounce: discarding bounce/457123 queue2", "double_bounce",
     {"msg": 457123, "queue": "queue2"}),
    ("delivery 77: report mangled, will defer", "delivery_mangled", {"delivery": 77}),
    ("delivery 12.q5x: report mangled, will defer queue5", "delivery_mangled",
     {"delivery": 12, "delivery_qident": "q5x", "queue": "queue5"}),
    ("alert: oh no! lost spawn connection! dying...", "alert",
     {"text": "oh no! lost spawn connection! dying..."}),
    ("alert: cannot start: qmail-send is already running", "alert",
     {"text": "cannot start: qmail-send is already running"}),
    ("alert: cannot start: hath the daemon spawn no fire?", "alert",
     {"text": "cannot start: hath the daemon spawn no fire?"}),
    ("alert: unable to opendir todo, sleeping...", "alert",
     {"text": "unable to opendir todo, sleeping..."}),
    ("warning: unable to stat info/5/457123; will try again later", "warning",
     {"text": "unable to stat info/5/457123; will try again later"}),
    ("warning: trouble marking local/5/457123; message will be delivered twice!", "warning",
     {"text": "trouble marking local/5/457123; message will be delivered twice!"}),
    ("warning: internal error: delivery report out of range", "warning",
     {"text": "internal error: delivery report out of range"}),
    ("warn: qmail-send: queue1: unable to stat mess/5/457123; will try again later", "warning",
     {"text": "qmail-send: queue1: unable to stat mess/5/457123; will try again later",
      "queue": "queue1"}),
    ("alert: qmail-send: queue3: oh no! lost spawn connection! dying...", "alert",
     {"text": "qmail-send: queue3: oh no! lost spawn connection! dying...", "queue": "queue3"}),
    ("alert: slowq-send: 4711: got TERM: slowq", "alert",  # pid, not a queue
     {"text": "slowq-send: 4711: got TERM: slowq"}),
    # older indimail qmail-send.c: log5("warning: ", queuedesc, ": unable to stat ...")
    ("warning: queue1: unable to stat info/1/2; will try again later", "warning",
     {"text": "queue1: unable to stat info/1/2; will try again later", "queue": "queue1"}),
    ("alert: qmail-send: 4711: got TERM: queue3", "alert",  # the queue name at the end
     {"text": "qmail-send: 4711: got TERM: queue3", "queue": "queue3"}),
    ("remote: alice@example.org bob@example.net 2048 queue2", "delivery_account",
     {"channel": "remote", "mail_from": "alice@example.org", "rcpt_to": "bob@example.net",
      "size": 2048, "queue": "queue2"}),
    ("end msg 100926020 qmail-send: queue1", "end_msg", {"msg": 100926020, "queue": "queue1"}),
    ("starting delivery 12.q5x: msg 100926020 to remote bob@example.net queue5",
     "starting_delivery", {"delivery": 12, "delivery_qident": "q5x", "msg": 100926020, "channel": "remote",
                           "rcpt_to": "bob@example.net", "queue": "queue5"}),
    ("bounce msg 53 qp 20357 queue1", "bounce_msg", {"msg": 53, "qp": 20357, "queue": "queue1"}),
    ("bounce processor sender <a@b.c> recipient <d@e.f> messfn <mess/1/2> bouncefn <bounce/2> "
     "exit=0 queue1", "bounce_processor",
     {"mail_from": "a@b.c", "rcpt_to": "d@e.f", "exit_code": 0, "queue": "queue1"}),
    ("info msg 99: bytes 5123 from <#@[]> qp 4242 uid 7796", "info_msg",
     {"msg": 99, "size": 5123, "mail_from": "#@[]", "qp": 4242, "uid": 7796}),
    ("running", "legacy", {"text": "running"}),
    ("exiting", "legacy", {"text": "exiting"}),
    ("number of deliveries left before exiting: 3", "legacy",
     {"text": "number of deliveries left before exiting: 3"}),
    # LKML 2004, re-joined: relay, code and DSN from the remote's reply.
    ("delivery 5: failure: 130.57.1.11_does_not_like_recipient./Remote_host_said:_550_5.1.1_"
     "<andrea@novell.com>_is_not_a_valid_mailbox._550_No_such_recipient/Giving_up_on_130.57.1.11./",
     "delivery",
     {"delivery": 5, "result": "failure",
      "text": "130.57.1.11 does not like recipient.\nRemote host said: 550 5.1.1 <andrea@novell.com> "
              "is not a valid mailbox. 550 No such recipient\nGiving up on 130.57.1.11.",
      "text_raw": "130.57.1.11_does_not_like_recipient./Remote_host_said:_550_5.1.1_<andrea@novell.com>"
                  "_is_not_a_valid_mailbox._550_No_such_recipient/Giving_up_on_130.57.1.11./",
      "relay_ip": "130.57.1.11", "smtp_code": 550, "dsn": "5.1.1"}),
    # Patched qmail-remote: "(rcpt)_" prefix.
    ("delivery 9: success: (tglx@linutronix.de)_213.239.205.147_accepted_message./"
     "Remote_host_said:_250_Ok:_queued_as_1D47365C044/", "delivery",
     {"delivery": 9, "result": "success",
      "text": "(tglx@linutronix.de) 213.239.205.147 accepted message.\n"
              "Remote host said: 250 Ok: queued as 1D47365C044",
      "text_raw": "(tglx@linutronix.de)_213.239.205.147_accepted_message./"
                  "Remote_host_said:_250_Ok:_queued_as_1D47365C044/",
      "recipient": "tglx@linutronix.de", "relay_ip": "213.239.205.147", "smtp_code": 250}),
    ("delivery 196893: deferral: Sorry_but_i_don't_understand_SMTP_response_:_local_error:"
     "_unexpected_message_/", "delivery",
     {"delivery": 196893, "result": "deferral",
      "text": "Sorry but i don't understand SMTP response : local error: unexpected message ",
      "text_raw": "Sorry_but_i_don't_understand_SMTP_response_:_local_error:_unexpected_message_/"}),
    ("delivery 31: deferral: Connected_to_2001:db8::25_but_connection_died._(#4.4.2)/ queue3",
     "delivery",
     {"delivery": 31, "result": "deferral",
      "text": "Connected to 2001:db8::25 but connection died. (#4.4.2)",
      "text_raw": "Connected_to_2001:db8::25_but_connection_died._(#4.4.2)/",
      "relay_ip": "2001:db8::25", "dsn": "4.4.2", "queue": "queue3"}),
    ("delivery 32: failure: Sorry._Although_I'm_listed_as_a_best-preference_MX_or_A_for_that_host,"
     "/it_isn't_in_my_control/locals_file,_so_I_don't_treat_it_as_local._(#5.4.6)/", "delivery",
     {"delivery": 32, "result": "failure",
      "text": "Sorry. Although I'm listed as a best-preference MX or A for that host,\n"
              "it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)",
      "text_raw": "Sorry._Although_I'm_listed_as_a_best-preference_MX_or_A_for_that_host,/it_isn't"
                  "_in_my_control/locals_file,_so_I_don't_treat_it_as_local._(#5.4.6)/",
      "dsn": "5.4.6"}),
    ("delivery 33: success: did_0+1+0/qp_12345/", "delivery",
     {"delivery": 33, "result": "success", "text": "did 0+1+0\nqp 12345",
      "text_raw": "did_0+1+0/qp_12345/", "qp": 12345}),  # the forwarded copy's qp
    # qmail-smtpd takes the quotes off a quoted local part: "john doe"@a.test is logged
    # with its space (a tester: "unparsed", and "roe@x.test" read as indimail's queue)
    ("info msg 7: bytes 812 from <john doe@a.test> qp 99 uid 0", "info_msg",
     {"msg": 7, "size": 812, "mail_from": "john doe@a.test", "qp": 99, "uid": 0}),
    ("info msg 8: bytes 1 from <a> qp 9 uid 9 b> qp 1 uid 2 queue5", "info_msg",
     {"msg": 8, "size": 1, "mail_from": "a> qp 9 uid 9 b", "qp": 1, "uid": 2, "queue": "queue5"}),
    ("starting delivery 1: msg 7 to remote jane roe@x.test", "starting_delivery",
     {"delivery": 1, "msg": 7, "channel": "remote", "rcpt_to": "jane roe@x.test"}),
    ("starting delivery 2: msg 7 to local a b c@x.test queue1", "starting_delivery",
     {"delivery": 2, "msg": 7, "channel": "local", "rcpt_to": "a b c@x.test", "queue": "queue1"}),
]


@pytest.mark.parametrize(("text", "event", "fields"), LITERALS)
def test_code_literal_lines(text: str, event: str, fields: dict) -> None:
    assert parse("@4000000052fafd8d3298434c " + text) == ("qmail-send", event, None, fields)
    # Unstamped with trailing spaces (TEST.deliver) or a CR: the same. (The CR case is
    # asserted on the parser itself: for a one-word line the dispatcher's first-word
    # gate sees "running\r", which is not a qmail-send word.)
    assert parse(text + "  ") == ("qmail-send", event, None, fields)
    assert qmail_send.parse(text + "\r") == (event, fields)
    assert qmail_send.parse(text + " \r\n") == (event, fields)


def test_splogger_wrapped_line() -> None:
    rec = LineParser().parse(
        b"Jun 19 09:12:24 denbaguse qmail: 1276913544.684768 delivery 1: success: did_0+0+1/\n")
    assert (rec.program, rec.event, rec.host, rec.time_source) == (
        "qmail-send", "delivery", "denbaguse", "accustamp")
    assert rec.time_ns == 1276913544684768000
    assert rec.fields == {"delivery": 1, "result": "success", "text": "did 0+0+1",
                          "text_raw": "did_0+0+1/"}


def test_qmail_daemon_and_qscheduler() -> None:
    assert parse("qscheduler: pid 200, queue /var/indimail/queue/queue7 started") == (
        "qscheduler", "daemon", None,
        {"text": "pid 200, queue /var/indimail/queue/queue7 started", "queue": "queue7"})
    assert qmail_send.parse_qmail_daemon("  ") is None


@pytest.mark.parametrize("text", [
    "new messages arrived", "delivery boy", "status: ok", "status: local 1/2", "info", "end",
    "end of story", "starting delivery soon", "bounce msg x qp y", "triple bounce", "local: x",
    "running late", "exiting now", "number 5", "", " ", "new msg ", "delivery 1: maybe: x",
    "info msg 1: bytes 2 from a qp 3 uid 4", "info msg 1: bytes 2 from <a> qp 3",
])
def test_not_qmail_send(text: str) -> None:
    assert qmail_send.parse(text) is None


def test_huge_numbers_do_not_raise() -> None:
    assert qmail_send.parse("new msg " + "9" * 5000) is None
    got = qmail_send.parse("new msg " + "9" * 40)
    assert got == ("new_msg", {"msg": int("9" * 40)})


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_any_text(text: str) -> None:
    for fn in (qmail_send.parse, qmail_send.parse_qmail_daemon):
        got = fn(text)
        assert got is None or (isinstance(got[0], str) and isinstance(got[1], dict))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["status: local ", "new msg ", "info msg ", "starting delivery ",
                        "delivery ", "bounce msg ", "triple bounce: discarding ", "end msg ",
                        "warn: ", "alert: ", "local: ", "remote: ", "number of deliveries"]),
       st.text(alphabet=st.sampled_from("0123456789 /:_.<>()#@abqueu\r\t-"), max_size=80))
def test_never_raises_on_grammar_shaped_text(head: str, tail: str) -> None:
    got = qmail_send.parse(head + tail)
    assert got is None or (isinstance(got[0], str) and isinstance(got[1], dict))


def test_delivery_with_an_empty_report():
    for line in (b"@4000000052fafd8d00000000 delivery 42: success: ",
                 b"@4000000052fafd8d00000000 delivery 42: failure:"):
        rec = LineParser().parse(line)
        assert rec.event == "delivery" and rec.fields["delivery"] == 42 and rec.fields["text"] == ""


@pytest.mark.parametrize("text", ["local deliveries will be put on hold",
                                  "remote deliveries will be put on hold"])
def test_pre_1_0_hold_lines_are_legacy(text):
    # qmailanalog matchup's field-1 list (formats.md): recognised but rare
    rec = LineParser().parse(b"@4000000052fafd8d00000000 " + text.encode())
    assert (rec.program, rec.event, rec.fields) == ("qmail-send", "legacy", {"text": text})


def test_indimail_lines_from_its_source():
    """indimail's per-recipient accounting, mangled reports with a queue, info/status
    lines and signal alerts (found by the parser probe: unparsed, or alerts paging)."""
    from shipper.severity import severity
    text = (SAMPLES_DIR / "indimail_source_formats.txt").read_text(encoding="utf-8")
    assert text.startswith("# source:")
    recs = [LineParser().parse(ln.encode()).to_dict() for ln in text.splitlines()[1:]]
    core = {"time_unix_ns", "time", "time_source", "program", "event", "message", "raw", "host",
            "pid", "source", "file_id", "offset", "flags", "event_id"}
    got = [(r["program"], r["event"], {k: v for k, v in r.items() if k not in core}) for r in recs]
    assert got == [
        ("qmail-send", "delivery_account", {
            "channel": "local", "mail_from": "mbhangui@argos.indimail.org",
            "rcpt_to": "mbhangui@argos.indimail.org", "msg": 656826, "size": 798,
            "queue": "queue1", "mode": "mqueue"}),
        ("qmail-send", "delivery_account", {
            "channel": "remote", "mail_from": "", "rcpt_to": "postmaster@example.com",
            "msg": 656827, "size": 2301, "queue": "queue1"}),
        ("qmail-send", "delivery_account", {
            "channel": "local", "mail_from": "", "rcpt_to": "postmaster@example.com",
            "size": 814, "queue": "queue5"}),
        ("qmail-send", "delivery_mangled", {"delivery": 2, "queue": "queue1"}),
        ("qmail-send", "info", {"text": "todo-proc: queue1: subdir=todo/5 fn=todo/5/656826",
                                "queue": "queue1"}),
        ("qmail-send", "bounce_deleted", {"msg": 656826, "queue": "queue1"}),
        ("qmail-send", "status_exiting", {"queue": "queue1",
                                          "text": "qmail-send: 4711 queue1 exiting"}),
        ("qmail-send", "status_info", {"text": "qmail-send: queue1: executing function startup",
                                       "queue": "queue1"}),
        ("qmail-send", "alert", {"text": "qmail-send: 4711 got TERM: queue1", "queue": "queue1"}),
        ("qmail-send", "warning", {"text": "todo-proc: queue1: subdir=todo/5 fn=todo/6/656826 "
                                           "incorrect split", "queue": "queue1"}),
        ("qmail-send", "alert", {"text": "oh no! lost msg 12345"}),
    ]
    assert [severity(r) for r in recs[-3:]] == [5, 4, 1]  # a signal is no alert; a lost msg is


@pytest.mark.parametrize(("raw", "text"), [
    # Gmail's 550-5.1.1 reply (its help link): the URL's slashes are its own
    ("2a00:1450:400c:c0b::1b_does_not_like_recipient./Remote_host_said:_550_5.1.1_"
     "https://support.google.com/mail/?p=NoSuchUser_x1si2.4_-_gsmtp/Giving_up_on_2a00:1450:400c:c0b::1b./",
     "2a00:1450:400c:c0b::1b does not like recipient.\nRemote host said: 550 5.1.1 "
     "https://support.google.com/mail/?p=NoSuchUser x1si2.4 - gsmtp\nGiving up on 2a00:1450:400c:c0b::1b."),
    # a URL that ends a reply line: the newline after it stays one
    ("192.0.2.5_does_not_like_recipient./Remote_host_said:_451_4.7.1_see_http://example.org/help/"
     "Giving_up_on_192.0.2.5./",
     "192.0.2.5 does not like recipient.\nRemote host said: 451 4.7.1 see http://example.org/help\n"
     "Giving up on 192.0.2.5."),
    ("Sorry._Although_I'm_listed_as_a_best-preference_MX_or_A_for_that_host,/it_isn't_in_my_"
     "control/locals_file,_so_I_don't_treat_it_as_local._(#5.4.6)/",
     "Sorry. Although I'm listed as a best-preference MX or A for that host,\nit isn't in my "
     "control/locals file, so I don't treat it as local. (#5.4.6)"),
    ("Remote_host_said:_550_no/such/user/", "Remote host said: 550 no\nsuch\nuser"),
    # a delivery program's message naming a path after a space, quote or "(" (found by
    # a black-box review: "/var/mail/bob.lock" was cut into lines)
    ("maildrop:_Unable_to_create_a_dot-lock_at_/var/mail/bob.lock./",
     "maildrop: Unable to create a dot-lock at /var/mail/bob.lock."),
    ("lda(bob):_Error:_open(/var/mail/bob)_failed:_Permission_denied/second_line/",
     "lda(bob): Error: open(/var/mail/bob) failed: Permission denied\nsecond line"),
    ('procmail:_Couldn\'t_create_"/var/spool/mail/bob"/',
     'procmail: Couldn\'t create "/var/spool/mail/bob"'),
    ("vdelivermail:_user_is_over_quota_/home/vpopmail/domains/x.org/bob/Maildir/_(#5.2.2)/",
     "vdelivermail: user is over quota /home/vpopmail/domains/x.org/bob/Maildir/ (#5.2.2)"),
    # a line that ends in a space before one word alone: still lines
    ("Remote_host_said:_550_see_/here/", "Remote host said: 550 see \nhere"),
    # a multi-line reply whose line ends in a URL: the next line starts with the code
    ("Remote_host_said:_550-5.7.1_see_https://support.google.com/mail/answer/81126/550_5.7.1_"
     "more_text_-_gsmtp/", "Remote host said: 550-5.7.1 see https://support.google.com/mail/answer/81126"
     "\n550 5.7.1 more text - gsmtp"),
])
def test_delivery_text_keeps_literal_slashes(raw: str, text: str) -> None:
    f = qmail_send.delivery_text_fields(raw)
    assert f["text"] == text and f["text_raw"] == raw
