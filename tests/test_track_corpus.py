"""``shipper stats`` and ``shipper track`` on bench/corpus.py's realistic log, checked
against what an admin gets from the raw lines (grep -c, a delivery-id → message map,
nearest-rank percentiles by hand): tcpserver/sslserver, rblsmtpd, qmail-smtpd,
recordio, and qmail-send with retries, bounces, double bounces and a triple bounce.
"""

from __future__ import annotations

import io
import math
import re
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
from corpus import lines, write_multilog  # noqa: E402

from shipper.track.cli import stats_main, track_main  # noqa: E402

N, SEED = 40_000, 12  # seed 12: a triple bounce at line 31,674

_LINE = re.compile(r"@([0-9a-f]{24}) (.*)")


def _ns(label: str) -> int:
    """A TAI64N label as ns (an offset from unix time that differences cancel)."""
    return int(label[:16], 16) * 1_000_000_000 + int(label[16:], 16)


def _run(main: Any, argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    rc = main(argv, stdout=out)
    return rc, out.getvalue()


def _nearest(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[math.ceil(p / 100 * len(v)) - 1]


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, str, str]]]:
    path = tmp_path_factory.mktemp("corpus") / "current"
    data = list(lines(N, SEED))
    path.write_bytes(b"".join(data))
    parsed = []
    for ln in data:
        m = _LINE.fullmatch(ln.decode().rstrip("\n"))
        assert m is not None
        parsed.append((_ns(m.group(1)), m.group(1), m.group(2)))
    return path, parsed


def _model(parsed: list[tuple[int, str, str]]) -> dict[str, Any]:
    """What the raw lines say, each figure counted its own way (not by the tracker)."""
    msgs: dict[int, dict[str, Any]] = {}
    dels: dict[int, tuple[int, str]] = {}  # delivery id → (msg, recipient)
    sess: dict[int, dict[str, Any]] = {}
    counts = {"success": 0, "failure": 0, "deferral": 0, "bounce": 0, "triple": 0}
    bqps: set[int] = set()
    for t, _label, text in parsed:
        if m := re.fullmatch(r"new msg (\d+)", text):
            msgs[int(m[1])] = {"new": t, "rcpts": {}, "att": []}
        elif m := re.fullmatch(r"info msg (\d+): bytes (\d+) from <(.*)> qp (\d+) uid \d+", text):
            msgs[int(m[1])].update(info=t, size=int(m[2]), sender=m[3], qp=int(m[4]))
        elif m := re.fullmatch(r"starting delivery (\d+): msg (\d+) to (\w+) (\S+)", text):
            dels[int(m[1])] = (int(m[2]), m[4])
            msgs[int(m[2])]["rcpts"].setdefault(m[4], None)
        elif m := re.fullmatch(r"delivery (\d+): (success|failure|deferral): .*", text):
            counts[m[2]] += 1
            msg, rc = dels[int(m[1])]
            msgs[msg]["rcpts"][rc] = m[2]
            msgs[msg]["att"].append((m[2], t))
        elif m := re.fullmatch(r"end msg (\d+)", text):
            msgs[int(m[1])]["end"] = t
        elif m := re.fullmatch(r"bounce msg \d+ qp (\d+)", text):
            counts["bounce"] += 1
            bqps.add(int(m[1]))
        elif text.startswith("triple bounce: "):
            counts["triple"] += 1
        elif m := re.fullmatch(r"(tcp|ssl)server: pid (\d+) from .*", text):
            sess[int(m[2])] = {"end": False, "kind": "no_mail"}
        elif m := re.fullmatch(r"(tcp|ssl)server: end (\d+) status \d+", text):
            sess[int(m[2])]["end"] = True
        elif m := re.fullmatch(r"sslserver: ssl (\d+) accept .*", text):
            sess[int(m[1])]["tls"] = True
        elif m := re.fullmatch(r"rblsmtpd: \S+ pid (\d+): .*", text):
            sess[int(m[1])]["kind"] = "blocked"
        elif m := re.fullmatch(r"qmail-smtpd: pid (\d+) (Reject|Accept)::.*", text):
            sess[int(m[1])]["kind"] = "rejected" if m[2] == "Reject" else "accepted"
    return {"msgs": msgs, "sess": sess, "counts": counts, "bqps": bqps}


def test_stats_totals_equal_counts_from_the_raw_lines(log: tuple[Path, list[Any]]) -> None:
    path, parsed = log
    want = _model(parsed)
    msgs, sess, counts = want["msgs"], want["sess"], want["counts"]
    rc, out = _run(stats_main, [str(path), "--json"])
    assert rc == 0
    d = orjson.loads(out)
    done = [m for m in msgs.values() if "info" in m and "end" in m]
    assert d["messages"] == len(msgs) and d["completed"] == len(done)
    assert d["incomplete"] == len([m for m in msgs.values() if "end" not in m]) and d["partial"] == 0
    assert d["bytes"] == sum(m.get("size", 0) for m in msgs.values())
    assert d["completed_bytes"] == sum(m["size"] for m in done)
    assert d["recipients"] == sum(len(m["rcpts"]) for m in msgs.values())
    assert d["completed_recipients"] == sum(1 for m in done for r in m["att"] if r[0] != "deferral")
    assert d["completed_attempts"] == sum(len(m["att"]) for m in done)
    dl = d["deliveries"]
    assert (dl["success"], dl["failure"], dl["deferral"]) == \
        (counts["success"], counts["failure"], counts["deferral"])
    assert dl["attempts"] == counts["success"] + counts["failure"] + counts["deferral"]
    assert d["bounces"] == {"queued": counts["bounce"], "double_discarded": 0,
                            "triple_discarded": counts["triple"]}
    assert counts["triple"] == 1 and counts["bounce"] > 100
    # each bounce queued is a message from <> or #@[] (those whose info msg is in the input)
    assert sorted(m["qp"] for m in msgs.values() if m.get("sender") in ("", "#@[]")) == \
        sorted(qp for qp in want["bqps"] if any(m.get("qp") == qp for m in msgs.values()))
    finals: dict[str, int] = {}
    for m in msgs.values():
        for r in m["rcpts"].values():
            finals[r or "pending"] = finals.get(r or "pending", 0) + 1
    assert d["recipient_outcomes"] == finals
    # sessions: one per tcpserver/sslserver "pid N from"; open ones are counted too
    assert d["sessions"]["count"] == len(sess)
    assert d["sessions"]["incomplete"] == sum(1 for s in sess.values() if not s["end"])
    assert d["sessions"]["tls"] == sum(1 for s in sess.values() if s.get("tls"))
    by: dict[str, int] = {}
    for s in sess.values():
        by[s["kind"]] = by.get(s["kind"], 0) + 1
    assert d["sessions"]["by_result"] == by
    # delays, exact below 10,000 values: nearest rank over the raw times
    ddelay = [t - m["info"] for m in msgs.values() for r, t in m["att"] if r == "success"]
    qtime = [m["end"] - m["info"] for m in done]
    for key, values in (("delay_s", ddelay), ("queue_time_s", qtime)):
        h = d[key]
        s = [v / 1e9 for v in values]
        assert h["count"] == len(s) and h["exact"]
        assert h["mean"] == round(sum(s) / len(s), 3) and h["max"] == round(max(s), 3)
        for p in (50, 90, 95, 99):
            assert h[f"p{p}"] == round(_nearest(s, p), 3), (key, p)
    assert d["delivery_time_s"]["count"] == dl["attempts"]


def _track(path: Path, *args: str) -> list[dict[str, Any]]:
    rc, out = _run(track_main, [str(path), "--json", *args])
    assert rc in (0, 1)
    return [orjson.loads(x) for x in out.splitlines()]


def _session_of(parsed: list[tuple[int, str, str]], qp: int) -> dict[str, Any]:
    """The smtpd session whose "250 ok … qp N" names ``qp``: its client, HELO, sender."""
    pid = next(int(t.split()[0]) for _, _, t in parsed if t.endswith(f" qp {qp}\r "))
    acc = next(t for _, _, t in parsed if t.startswith(f"qmail-smtpd: pid {pid} Accept::"))
    m = re.search(r"S:(\S+):([^:\s]+) H:(\S+) F:(\S+)", acc)
    assert m is not None
    return {"conn_pid": pid, "remote_ip": m[1], "remote_host": m[2], "helo": m[3],
            "mail_from": m[4]}


@pytest.mark.slow
def test_track_answers_for_a_mail_of_each_fate(log: tuple[Path, list[Any]]) -> None:
    path, parsed = log
    msgs = _model(parsed)["msgs"]

    def pick(cond: Any) -> int:
        return next(k for k, m in msgs.items() if "end" in m and m.get("sender") not in ("", "#@[]")
                    and cond(m))

    fates = {
        "local": pick(lambda m: [r for r, _ in m["att"]] == ["success"]
                      and next(iter(m["rcpts"])).endswith("@example.com")),
        "remote": pick(lambda m: [r for r, _ in m["att"]] == ["success"]
                       and not next(iter(m["rcpts"])).endswith("@example.com")),
        "deferred, then delivered": pick(lambda m: [r for r, _ in m["att"]] == ["deferral", "success"]),
        "failed": pick(lambda m: [r for r, _ in m["att"]] == ["failure"]),
    }
    for fate, msg in fates.items():
        m = msgs[msg]
        recs = _track(path, "--msgid", str(msg))
        mail = recs[0]
        assert mail["msg"] == msg and mail["flags"] == [], fate
        assert [r["rcpt_to"] for r in mail["recipients"]] == list(m["rcpts"]), fate
        assert [r["result"] for r in mail["recipients"]] == list(m["rcpts"].values()), fate
        assert mail["n_recipients"] == 1 and mail["recipients"][0]["n_attempts"] == len(m["att"])
        assert mail["birth_unix_ns"] == m["info"] - 10 * 10**9 - (1 << 62) * 10**9
        assert mail["queue_time_s"] == round((m["end"] - m["info"]) / 1e9, 6)
        r = mail["recipients"][0]
        if r["result"] == "success":
            assert r["delay_s"] == round((m["att"][-1][1] - m["info"]) / 1e9, 6)
        sess = _session_of(parsed, m["qp"])
        assert mail["mail_from"] == sess.pop("mail_from")
        assert {k: mail["session"].get(k) for k in sess} == sess, fate
        if fate in ("remote", "deferred, then delivered"):
            # the relay: the IP the success text names ("IP_accepted_message./…")
            end = next(t for t_, _, t in parsed if t_ == m["att"][-1][1])
            assert r["relay_ip"] == end.split(": ", 2)[2].split("_", 1)[0], fate
        if fate == "failed":
            (bounce,) = [x for x in recs[1:] if x.get("bounce_of", {}).get("msg") == msg]
            assert mail["bounce_qp"] == bounce["qp"] and bounce["mail_from"] == ""
            assert bounce["recipients"][0]["rcpt_to"] == mail["mail_from"]
            assert len(recs) >= 2 and all(x["event"] == "mail" for x in recs)
        else:
            assert len(recs) == 1, fate
    # the triple bounce: a double bounce (#@[]) to the postmaster that failed, discarded
    (triple,) = [k for k, m in msgs.items()
                 if any(t.endswith(f"discarding bounce/{k}") for _, _, t in parsed)]
    (dbl,) = _track(path, "--msgid", str(triple))
    assert dbl["mail_from"] == "#@[]" and dbl["bounce_kind"] == "double_bounce"
    assert dbl["bounce_discarded"] == "triple" and dbl["result"] == "failure"
    assert dbl["recipients"][0]["rcpt_to"] == "postmaster@example.com"
    # and it is the bounce of a bounce of the original mail
    first = _track(path, "--msgid", str(dbl["bounce_of"]["msg"]))[0]
    assert first["mail_from"] == "" and first["bounce_of"]["msg"] in msgs


def test_track_since_until_edges(log: tuple[Path, list[Any]]) -> None:
    """--since: the mail's end at or after T; --until: its birth (info msg) at or before T.
    A TAI64N label is an exact T: the label of the mail's own lines is the edge."""
    path, parsed = log
    msgs = _model(parsed)["msgs"]
    msg = next(k for k, m in list(msgs.items())[100:] if "end" in m and m.get("sender"))
    label = {t: lab for t, lab, _ in parsed}
    info, end = label[msgs[msg]["info"]], label[msgs[msg]["end"]]

    def after(lab: str, d: int) -> str:
        return f"{lab[:16]}{int(lab[16:], 16) + d:08x}"

    def found(*args: str) -> bool:
        return any(r.get("msg") == msg for r in _track(path, "--msgid", str(msg), *args))

    assert found("--since", f"@{end}") and not found("--since", f"@{after(end, 1)}")
    assert found("--until", f"@{info}") and not found("--until", f"@{after(info, -1)}")
    assert found("--since", f"@{end}", "--until", f"@{info}")


def test_a_mail_straddling_two_archives_of_a_multilog_dir(tmp_path: Path) -> None:
    """multilog rotated between a mail's info msg and its end msg (both archived): track
    on the directory gives the same answer as on the one file, and stats the same totals."""
    d = tmp_path / "log"
    write_multilog(str(d), 20_000, 60_000, SEED)
    archives = sorted(d.glob("@*.s"))
    assert len(archives) >= 3
    where: dict[int, tuple[str, str]] = {}
    for a in archives:
        for ln in a.read_text().splitlines():
            text = ln.split(" ", 1)[1]
            if m := re.fullmatch(r"info msg (\d+): .*", text):
                where[int(m[1])] = (a.name, "")
            elif (m := re.fullmatch(r"end msg (\d+)", text)) and int(m[1]) in where:
                where[int(m[1])] = (where[int(m[1])][0], a.name)
    msg = next(k for k, (a, b) in where.items() if b and a != b)
    one = tmp_path / "one.log"
    one.write_bytes(b"".join((d / n).read_bytes() for n in [*(a.name for a in archives), "current"]))
    keep = ("msg", "mail_from", "size", "qp", "birth_unix_ns", "time_unix_ns", "recipients",
            "result", "flags", "session", "bounce_qp")
    from_dir = [{k: r.get(k) for k in keep} for r in _track(d, "--msgid", str(msg))]
    from_file = [{k: r.get(k) for k in keep} for r in _track(one, "--msgid", str(msg))]
    assert from_dir == from_file and from_dir[0]["flags"] == []
    assert from_dir[0]["recipients"][0]["result"] in ("success", "failure")
    st_dir = orjson.loads(_run(stats_main, [str(d), "--json"])[1])
    st_file = orjson.loads(_run(stats_main, [str(one), "--json"])[1])
    assert st_dir == st_file
