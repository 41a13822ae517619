"""Local sinks (shipper.sinks.local): the rotated NDJSON file and stdout."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import FIXTURES

from shipper.parse import LineParser
from shipper.sinks.base import SinkError
from shipper.sinks.local import FileSink, StdoutSink, rotate_files

ROOT = Path(__file__).resolve().parent.parent


def fixture_records() -> list[dict[str, Any]]:
    lines = (FIXTURES / "sink_lines.log").read_bytes().splitlines()
    assert lines[0].startswith(b"# source:")
    parser = LineParser(source="/var/log/qmail/current", file_id="00112233aabbccdd")
    return [parser.parse(ln, i * 80).to_dict() for i, ln in enumerate(lines[1:])]


def read_all(path: Path, keep: int) -> list[dict[str, Any]]:
    """Records of PATH.keep ... PATH.1, PATH in write order."""
    out = []
    for name in [f"{path}.{i}" for i in range(keep, 0, -1)] + [str(path)]:
        if os.path.exists(name):
            out += [orjson.loads(x) for x in Path(name).read_bytes().splitlines()]
    return out


async def test_file_sink_writes_ndjson(tmp_path: Path):
    recs = fixture_records()
    path = tmp_path / "out" / "records.ndjson"
    sink = FileSink(str(path))
    await sink.send(recs[:10])
    await sink.send(recs[10:])
    await sink.close()
    assert [orjson.loads(x) for x in path.read_bytes().splitlines()] == recs
    assert sink.stats.sent == len(recs) and sink.stats.extra["rotations"] == 0
    sink2 = FileSink(str(path))  # appends after a restart
    await sink2.send(recs[:2])
    await sink2.close()
    assert len(path.read_bytes().splitlines()) == len(recs) + 2


async def test_a_file_moved_or_deleted_under_the_sink_is_made_anew(tmp_path: Path, caplog):
    """Found by a black-box review: after an rm, or logrotate's rename (without
    copytruncate), every later record went into the deleted or renamed file, counted
    delivered, with nothing said. Now the next batch goes to a new file at the path."""
    import logging

    caplog.set_level(logging.INFO)
    recs = fixture_records()
    path = tmp_path / "records.ndjson"
    sink = FileSink(str(path))
    await sink.send(recs[:3])
    path.rename(tmp_path / "records.ndjson.1")  # logrotate's rename, no copytruncate
    await sink.send(recs[3:5])
    path.unlink()  # an rm
    await sink.send(recs[5:8])
    await sink.close()
    assert [orjson.loads(x) for x in (tmp_path / "records.ndjson.1").read_bytes().splitlines()] == recs[:3]
    assert [orjson.loads(x) for x in path.read_bytes().splitlines()] == recs[5:8]  # 3:5 were rm'ed
    assert sink.stats.extra["reopened"] == 2 and sink.stats.acked == 8
    assert caplog.text.count("was moved or deleted: writing to a new one") == 2


async def test_file_sink_rotates_by_size_and_keeps_n(tmp_path: Path):
    recs = fixture_records()
    path = tmp_path / "r.ndjson"
    sink = FileSink(str(path), max_bytes=2000, keep=50, fsync="never")
    for i in range(0, len(recs), 7):
        await sink.send(recs[i:i + 7])
    await sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) > 5 and "r.ndjson" in files and "r.ndjson.1" in files
    for name in files:
        data = (tmp_path / name).read_bytes()
        assert len(data) <= 2000 and data.endswith(b"\n")  # whole lines only
    assert read_all(path, 50) == recs  # nothing lost, order kept
    assert sink.stats.extra["files_dropped"] == 0

    small = tmp_path / "small"
    small.mkdir()
    sink = FileSink(str(small / "s.ndjson"), max_bytes=1500, keep=2, fsync="rotate")
    await sink.send(recs)
    await sink.close()
    assert sorted(p.name for p in small.iterdir()) == ["s.ndjson", "s.ndjson.1", "s.ndjson.2"]
    assert sink.stats.extra["files_dropped"] > 0  # counted, not silent
    kept = read_all(small / "s.ndjson", 2)
    assert kept == recs[len(recs) - len(kept):]  # the newest records survive


async def test_one_record_bigger_than_max_bytes_gets_its_own_file(tmp_path: Path):
    recs = fixture_records()
    big = dict(recs[0], message="x" * 5000)
    path = tmp_path / "b.ndjson"
    sink = FileSink(str(path), max_bytes=4096, keep=5)
    await sink.send([recs[1], big, recs[2]])
    await sink.close()
    assert read_all(path, 5) == [recs[1], big, recs[2]]
    assert len(Path(f"{path}.1").read_bytes().splitlines()) == 1


async def test_file_sink_error_is_retryable(tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sink = FileSink(str(blocker / "x.ndjson"))
    assert sink.stats.connected  # a local sink is up until it fails (not "down" forever)
    with pytest.raises(SinkError) as err:
        await sink.send(fixture_records()[:1])
    assert "not-a-dir" in str(err.value)
    assert not sink.stats.connected
    ok = FileSink(str(tmp_path / "ok.ndjson"))
    await ok.send(fixture_records()[:1])
    assert ok.stats.connected
    assert (tmp_path / "ok.ndjson").stat().st_mode & 0o007 == 0  # addresses: not for all
    await ok.close()


def test_rotate_files(tmp_path: Path):
    p = tmp_path / "f"
    for gen in range(4):
        p.write_text(str(gen))
        dropped = rotate_files(str(p), 2)
        assert dropped == (gen >= 2)
    assert not p.exists()
    assert (tmp_path / "f.1").read_text() == "3" and (tmp_path / "f.2").read_text() == "2"
    p.write_text("x")
    assert rotate_files(str(p), 0) and not p.exists()


def test_bad_options_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="fsync"):
        FileSink(str(tmp_path / "x"), fsync="sometimes")


async def test_stdout_sink_to_a_stream():
    recs = fixture_records()[:5]
    buf = io.BytesIO()
    sink = StdoutSink(stream=buf)
    await sink.send(recs)
    await sink.close()
    assert [orjson.loads(x) for x in buf.getvalue().splitlines()] == recs
    assert sink.stats.sent == 5


def test_stdout_sink_writes_real_stdout():
    code = ("import asyncio, orjson, sys\n"
            "from shipper.sinks.local import StdoutSink\n"
            "recs = orjson.loads(sys.stdin.buffer.read())\n"
            "asyncio.run(StdoutSink().send(recs))\n")
    recs = fixture_records()
    r = subprocess.run([sys.executable, "-c", code], input=orjson.dumps(recs), capture_output=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [orjson.loads(x) for x in r.stdout.splitlines()] == recs


async def test_file_sink_never_leaves_half_a_record_on_a_full_disk(tmp_path: Path, monkeypatch):
    """A write cut short by ENOSPC is cut back: the retry appends whole lines after whole
    lines (found by fault injection: a torn record glued to the next one)."""
    import errno

    from shipper.sinks import local
    path = tmp_path / "out.ndjson"
    sink = FileSink(str(path), fsync="never")
    recs = fixture_records()[:6]
    await sink.send(recs[:2])
    real = os.write
    state = {"full": True}

    def half_then_full(fd, data):
        if state["full"]:
            state["full"] = False
            real(fd, bytes(data[: len(data) // 2]))  # part of the batch made it to disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)
    monkeypatch.setattr(local.os, "write", half_then_full)
    with pytest.raises(SinkError):
        await sink.send(recs[2:4])
    await sink.send(recs[2:4])  # the pipeline's retry
    await sink.send(recs[4:])
    await sink.close()
    got = [orjson.loads(x)["event_id"] for x in path.read_bytes().splitlines()]
    assert got == [r["event_id"] for r in recs]


async def test_a_file_sink_follows_its_admins_link_not_another_users(tmp_path):
    """An upgrade hunt: a file sink whose path is the admin's symlink (to another disk)
    delivered nothing after the security change (O_NOFOLLOW); a link another user
    planted there must still not be written through (a security review)."""
    import pwd

    real = tmp_path / "data" / "real.ndjson"
    real.parent.mkdir()
    link = tmp_path / "out.ndjson"
    link.symlink_to(real)
    sink = FileSink(str(link))
    try:
        await sink.send([{"event": "a"}])
    finally:
        await sink.close()
    assert real.read_bytes().count(b"\n") == 1
    if os.geteuid() != 0:
        return  # a link of another user's: only root can make one here
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    planted = tmp_path / "planted.ndjson"
    planted.symlink_to(victim)
    nobody = pwd.getpwnam("nobody").pw_uid
    os.lchown(planted, nobody, nobody)
    sink = FileSink(str(planted))
    try:
        with pytest.raises(Exception, match="symbolic link of nobody's: not written through"):
            await sink.send([{"event": "b"}])
    finally:
        await sink.close()
    assert victim.read_bytes() == b"precious"
