"""The trackers' work per line stays bounded: at their caps, with a recipient listed
thousands of times, with thousands of sslserver sessions open; and what the bounds
leave out is counted. Real-format lines through the real parser; no timing: the
work is asserted by what is kept and by counting calls."""

from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson
import pytest

import shipper.track.qmail as qmail_mod
from shipper.parse import LineParser
from shipper.track.cli import stats_main
from shipper.track.correlator import Correlator, CorrelatorOptions
from shipper.track.qmail import QmailOptions, QmailTracker
from shipper.track.session import SessionOptions, SessionTracker

T0 = 0x4000000066000000  # a TAI64 label's seconds


def stamp(s: int) -> str:
    return f"@{T0 + s:016x}00000000"


def parse(lines: list[str]) -> list[dict[str, Any]]:
    p = LineParser(source="bounds", file_id="0123456789abcdef")
    return [p.parse(ln.encode() + b"\n", i * 100).to_dict() for i, ln in enumerate(lines)]


def stats(argv: list[str]) -> str:
    buf = io.StringIO()
    assert stats_main(argv, stdout=buf) == 0
    return buf.getvalue()


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(state))  # as tracking.json holds it


# -- 1. eviction at a cap: the oldest, found without a walk over deleted entries -------


def test_qmail_at_its_cap_evicts_the_oldest_each_time() -> None:
    lines = []
    for i in range(40):
        lines += [f"{stamp(i)} new msg {100 + i}",
                  f"{stamp(i)} info msg {100 + i}: bytes 1000 from <a{i}@x.org> qp {500 + i} uid 89"]
        if i % 3 == 2:  # one ended normally: deletions behind the oldest too
            lines.append(f"{stamp(i)} end msg {100 + i - 1}")
    t = QmailTracker(QmailOptions(max_open=5))
    out: list[dict[str, Any]] = []
    for r in parse(lines):
        t.feed(r, out)
    evicted = [o["msg"] for o in out if o.get("incomplete_reason") == "evicted"]
    ended = {o["msg"] for o in out if o.get("incomplete_reason") is None}
    assert ended == {100 + i - 1 for i in range(40) if i % 3 == 2}
    assert evicted == [m for m in range(100, 140) if m not in ended][:len(evicted)]
    assert len(t.mails) == 5 and [m["msg"] for m in t.mails.values()] == \
        [m for m in range(100, 140) if m not in ended][-5:]
    # A dict's next(iter(d)) walks over the slots deleted entries left: O(deletions)
    # per eviction at the cap (84 s for a million lines); an OrderedDict's oldest is O(1).
    # Kept so after a restart from the state, whose form is unchanged (lists of pairs).
    state = roundtrip(t.to_state())
    assert [k for k, _ in state["mails"]] == list(t.mails)
    t2 = QmailTracker(QmailOptions(max_open=5))
    t2.load_state(state)
    for tr in (t, t2):
        assert all(isinstance(d, OrderedDict) for d in (tr.mails, tr.bounces, tr.forwards))
    out = []
    t2.feed(parse([f"{stamp(50)} new msg 999"])[0], out)
    assert [o["msg"] for o in out] == [list(t.mails.values())[0]["msg"]]


def test_sessions_and_qp_links_at_their_caps_go_oldest_first() -> None:
    """Stock qmail-smtpd without recordio logs no qp: every mail's qp link waits, so
    qp_mails sits at link_cap and lets one go per mail."""
    c = Correlator(CorrelatorOptions(session=SessionOptions(max_open=3, link_cap=3)))
    lines = [f"{stamp(i)} tcpserver: pid {1000 + i} from 192.0.2.{i}" for i in range(8)]
    for i, qp in enumerate((1, 2, 3, 4, 5, 4, 6)):  # qp 4 again: the newest once more
        lines += [f"{stamp(10 + i)} new msg {200 + i}",
                  f"{stamp(10 + i)} info msg {200 + i}: bytes 9 from <s@x.org> qp {qp} uid 89"]
    out = c.feed(parse(lines))
    assert [o["conn_pid"] for o in out if o["event"] == "smtp_session"] == [1000, 1001, 1002, 1003, 1004]
    s = c.sessions
    assert list(s.sessions) == ["\x001005", "\x001006", "\x001007"]
    assert list(s.qp_mails) == ["\x005", "\x004", "\x006"] and len(s.qp_mails["\x004"]) == 2
    s2 = SessionTracker(SessionOptions(max_open=3, link_cap=3))
    s2.load_state(roundtrip(s.to_state()))
    for tr in (s, s2):
        assert all(isinstance(d, OrderedDict)
                   for d in (tr.sessions, tr.qp_sessions, tr.qp_mails, tr.senders, tr.just_ended))
    assert list(s2.qp_mails) == list(s.qp_mails)


# -- 2. a recipient listed thousands of times ------------------------------------------


def _dup_mail(starts_results: list[str]) -> list[str]:
    head = [f"{stamp(0)} new msg 7", f"{stamp(0)} info msg 7: bytes 1000 from <a@x.org> qp 99 uid 89"]
    return head + [f"{stamp(1 + i)} {ln}" for i, ln in enumerate(starts_results)]


RETRIES = [  # same@far.example listed (at least) three times
    "starting delivery 1: msg 7 to remote same@far.example",
    "starting delivery 2: msg 7 to remote same@far.example",
    "starting delivery 3: msg 7 to remote same@far.example",
    "delivery 1: deferral: busy/",
    "delivery 2: success: ok/",
    "delivery 3: deferral: busy/",
    "starting delivery 4: msg 7 to remote same@far.example",  # the latest copy, free
    "starting delivery 5: msg 7 to remote same@far.example",  # the first free: copy 0
    "starting delivery 6: msg 7 to remote same@far.example",  # none free: a fourth
    "delivery 4: success: ok/",
    "delivery 5: failure: no/",
    "delivery 6: success: ok/",
    "end msg 7",
]
RETRIES_WANT = [([1, 5], "failure"), ([2], "success"), ([3, 4], "success"), ([6], "success")]


def _copies_of(mail: dict[str, Any]) -> list[tuple[list[int], str]]:
    return [([a["delivery"] for a in r["attempts"]], r["result"]) for r in mail["recipients"]]


def test_a_recipient_listed_many_times_costs_no_scan_per_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    (mail,) = Correlator().feed(parse(_dup_mail(RETRIES)))
    assert _copies_of(mail) == RETRIES_WANT
    assert (mail["n_success"], mail["n_failure"], mail["n_deferral"]) == (3, 1, 2)

    # Each delivery to its own copy: looking through every recipient for a free one
    # was O(recipients) a delivery (46 s for 32,000). Counted: the copies looked at.
    n = 5000
    looked = 0
    listed_again = qmail_mod._listed_again

    def counting(r: dict[str, Any]) -> bool:
        nonlocal looked
        looked += 1
        return listed_again(r)
    monkeypatch.setattr(qmail_mod, "_listed_again", counting)
    lines = []
    for i in range(n):
        lines += [f"starting delivery {i + 1}: msg 7 to remote same@far.example",
                  f"delivery {i + 1}: success: ok/"]
    (mail,) = Correlator().feed(parse(_dup_mail([*lines, "end msg 7"])))
    assert looked <= 2 * n
    assert mail["n_recipients"] == n and mail["n_success"] == n
    assert all(r["n_attempts"] == 1 and r["result"] == "success" for r in mail["recipients"])
    assert [r["attempts"][0]["delivery"] for r in mail["recipients"]] == list(range(1, n + 1))


def test_duplicates_of_a_mail_from_a_state_saved_before_their_index() -> None:
    """The current daemon's tracking.json has no index of the copies: it is built from
    the recipients on load, so a retry still goes to the copy it went to before."""
    recs = parse(_dup_mail(RETRIES))
    cut = 2 + 6  # after the first three results
    c = Correlator()
    assert c.feed(recs[:cut]) == []
    state = roundtrip(c.to_state())
    for _, m in state["qmail"]["mails"]:
        assert m.pop("copies") == {"remote same@far.example": [0, 1, 2]}
    c2 = Correlator.from_state(state)
    (mail,) = c2.feed(recs[cut:])
    assert _copies_of(mail) == RETRIES_WANT


# -- 3. sslserver TLS pids: looked up by key, not by a look at every open session -----


class _Watched(OrderedDict):  # type: ignore[type-arg]
    """Open sessions that count whole walks over them."""

    walks = 0

    def items(self):  # type: ignore[no-untyped-def]
        _Watched.walks += 1
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        _Watched.walks += 1
        return super().values()

    def __iter__(self):  # type: ignore[no-untyped-def]
        _Watched.walks += 1
        return super().__iter__()


def test_tls_and_ended_by_lines_do_not_walk_the_open_sessions() -> None:
    c = Correlator()
    c.sessions.sessions = _Watched()
    _Watched.walks = 0
    lines = [f"{stamp(0)} sslserver: pid {10_000 + 200 * i} from 192.0.2.{i}" for i in range(200)]
    lines += [f"{stamp(1)} sslserver: ssl {10_100 + 200 * i} accept TLSv1.3" for i in range(150)]  # none near
    lines += [
        f"{stamp(2)} sslserver: ssl 39998 accept TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384",  # pid 40000's
        f"{stamp(2)} sslserver: pid 60010 from 198.51.100.1",
        f"{stamp(2)} sslserver: pid 60030 from 198.51.100.2",
        f"{stamp(2)} sslserver: ssl 60020 accept TLSv1.3",  # as near to both: the one above
        f"{stamp(3)} sslserver: ended by 39997 status 0",  # → 39998, pid 40000's alias
        f"{stamp(3)} sslserver: ended by 10395 status 0",  # → 10400, the nearest above (≤ 8)
    ]
    out = c.feed(parse(lines))
    assert _Watched.walks == 0
    tls, ended = [o for o in out if o["conn_pid"] == 40000], [o for o in out if o["conn_pid"] == 10400]
    assert [(o["pids"], o["tls"], o["flags"]) for o in tls] == \
        [([40000, 39998], "TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384", [])]
    assert [(o["flags"], o.get("tls")) for o in ended] == [([], None)]
    assert c.sessions.sessions["\x0060030"]["pids"] == [60030, 60020]
    assert "tls" not in c.sessions.sessions["\x0060010"]
    # an ssl line no open session is near: a session of its own, as before
    assert c.sessions.sessions["\x0010100"]["partial"] is True


# -- 4. what the bounds leave out is counted ---------------------------------------


def test_stats_counts_deliveries_whose_mail_was_not_tracked(tmp_path: Path) -> None:
    """At the open-mail cap a mail seen from its middle is not taken in: its deliveries
    were in no figure, and nothing said so."""
    log = tmp_path / "send.log"
    log.write_text("\n".join([
        f"{stamp(0)} new msg 1",
        f"{stamp(0)} info msg 1: bytes 100 from <a@x.org> qp 11 uid 89",
        f"{stamp(1)} starting delivery 5: msg 2 to remote b@y.example",
        f"{stamp(2)} delivery 5: success: ok/",
        f"{stamp(3)} end msg 1",
    ]) + "\n")
    d = orjson.loads(stats([str(log), "--max-open", "1", "--json"]))
    assert d["untracked_deliveries"] == 1 and d["deliveries"]["attempts"] == 0
    (line,) = [ln for ln in stats([str(log), "--max-open", "1"]).splitlines() if "untracked" in ln]
    assert line.split()[-1] == "1"
    # under the cap it is a partial mail of its own, counted there: no such line
    d = orjson.loads(stats([str(log), "--json"]))
    assert d["untracked_deliveries"] == 0 and d["deliveries"]["attempts"] == 1
    assert "untracked" not in stats([str(log)])


def test_a_session_s_qps_are_bounded_and_the_rest_counted() -> None:
    n = 150
    lines = [f"{stamp(0)} tcpserver: pid 4242 from 192.0.2.25"]
    lines += [f"{stamp(1)} 4242 > 250 ok 1717243200 qp {5000 + i} " for i in range(n)]
    lines += [f"{stamp(2)} tcpserver: end 4242 status 0",
              f"{stamp(2)} new msg 77",
              f"{stamp(2)} info msg 77: bytes 9 from <s@x.org> qp {5000 + n - 1} uid 89",
              f"{stamp(3)} end msg 77"]
    out = Correlator().feed(parse(lines))
    (s,) = [o for o in out if o["event"] == "smtp_session"]
    assert s["qps"] == list(range(5000, 5100)) and s["qps_dropped"] == n - 100
    assert f"{n} queued" in s["message"]
    (m,) = [o for o in out if o["event"] == "mail"]
    assert m["session"]["conn_pid"] == 4242  # a qp not listed still links its mail
