"""The list of event names a config's include and exclude lists are checked against:
complete against every fixture line and the parsers' own source, and a typo said."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import FIXTURES

from shipper.config import load_config_text
from shipper.events import EVENTS, PROGRAMS
from shipper.parse import LineParser

ROOT = Path(__file__).resolve().parent.parent


def test_every_event_of_the_fixtures_and_the_parsers_is_known():
    seen: set[str] = set()
    programs: set[str] = set()
    for path in FIXTURES.rglob("*"):
        if not path.is_file():
            continue
        parser = LineParser()
        for line in path.read_bytes().split(b"\n")[:20000]:
            if line and not line.startswith(b"#"):
                rec = parser.parse(line)
                seen.add(rec.event)
                programs.add(rec.program or "-")
    assert len(seen) > 80 and seen <= EVENTS, sorted(seen - EVENTS)
    # the parsers' own "return EVENT, fields" (those no fixture line reaches too)
    src = "".join(p.read_text() for p in (ROOT / "shipper" / "parsers").glob("*.py"))
    returned = set(re.findall(r'return "([a-z][a-z0-9_]*)", ', src))
    assert returned <= EVENTS, sorted(returned - EVENTS)
    assert {"mail", "smtp_session", "gap", "repeated"} <= EVENTS  # summaries, ours, rsyslog's
    # every program a fixture names is known, but Postfix's own (postfix/smtpd, ...) and
    # syslog tags of other programs (free text)
    named = {p for p in programs if not p.startswith(("postfix", "pmg"))}
    assert {"qmail-send", "qmail-smtpd", "tcpserver", "recordio", "dovecot", "vpopmail"} <= named & PROGRAMS


def test_a_typo_in_an_include_or_exclude_list_is_said():
    """include_events = ["delivry"] kept no record, and check said ok (a fault hunt)."""
    cfg = load_config_text('[sources.q]\ntype = "stdin"\n[transforms]\ninclude_events = ["delivry"]\n'
                           'exclude_programs = ["qmail_send", "my-own-tag", "postfix/smtpd", "-"]\n'
                           '[sinks.s]\ntype = "stdout"\nexclude_events = ["status", "stauts"]\n', env={})
    assert cfg.warnings == [
        "transforms.include_events[0]: no parser makes the event 'delivry'; did you mean 'delivery'? "
        "(none of the list is known: it may keep no record)",
        "transforms.exclude_programs[0]: no parser makes the program 'qmail_send'; did you mean 'qmail-send'?",
        "sinks.s.exclude_events[1]: no parser makes the event 'stauts'; did you mean 'status'?",
    ]
    shipped = (ROOT / "conf" / "shipper.toml").read_text()
    assert not any("no parser makes" in w for w in load_config_text(shipped, env={}, check_files=False).warnings)


def _json_type(v: object) -> str:
    return {bool: "bool", int: "number", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(v), "null")


def test_every_key_has_one_json_type_in_lines_summaries_and_gaps():
    """A SIEM maps each key to one type (Elasticsearch refuses a document whose key has
    another). A schema audit found dovecot's `session` a string while a mail summary's
    `session` is an object: dovecot's is `session_id` now."""
    from shipper.follower import Gap
    from shipper.pipeline import gap_record
    from shipper.track.correlator import Correlator

    types: dict[str, dict[str, str]] = {}
    summaries = 0
    for path in sorted(FIXTURES.rglob("*")):
        if not path.is_file():
            continue
        parser = LineParser(source=f"/var/log/{path.parent.name}/{path.name}/current", file_id="0123456789abcdef")
        recs = [parser.parse(line, i).to_dict() for i, line in enumerate(path.read_bytes().split(b"\n")[:20000])
                if line and not line.startswith(b"#")]
        corr = Correlator()
        made = corr.feed(recs) + corr.finish()
        summaries += len(made)
        out = recs + made
        for rec in out:
            for k, v in rec.items():
                t = _json_type(v)
                if t != "null":
                    types.setdefault(k, {}).setdefault(t, f"{path.name}: {rec['event']}")
    gap = gap_record(Gap("/var/log/qmail/send", "@4000000069558b0a00000000.s", 10, True, 1, 2, "deleted",
                         ("/var/log/qmail/send", {})), "mx")
    core = list(LineParser().parse(b"@4000000052fafd8d00000000 new msg 5").to_dict())[:-1]
    assert list(gap)[:len(core)] == core  # the core keys first, as in every record
    for k, v in gap.items():
        if _json_type(v) != "null":
            types.setdefault(k, {}).setdefault(_json_type(v), "gap")
    assert summaries > 200  # mails and sessions of the fixtures' flows
    mixed = {k: seen for k, seen in types.items() if len(seen) > 1}
    assert not mixed, mixed
    assert types["session"] == {"object": types["session"]["object"]}
