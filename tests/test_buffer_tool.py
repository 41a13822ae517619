"""`shipper buffer verify|repair|stats`: offline checks of a disk queue."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import orjson

from shipper.buffer_tool import inspect, main, repair, stats, verify
from shipper.diskqueue import HEADER_SIZE, QUARANTINE_NAME, STATE_NAME, DiskQueue, list_segments

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000_000_000_000


def make_buffer(path: Path, n: int = 1000, ack: int = 0) -> None:
    q = DiskQueue.open(path, segment_bytes=64 << 10, fsync="always")
    for i in range(0, n, 100):
        q.append([orjson.dumps({"time_unix_ns": T0 + j * 1000, "n": j, "pad": "x" * 150})
                  for j in range(i, min(n, i + 100))])
    if ack:
        q.ack(ack)
    q.close()


def data_frame_offsets(seg: Path) -> list[int]:
    raw = seg.read_bytes()
    out, pos = [], 0
    while pos + HEADER_SIZE <= len(raw):
        ln = int.from_bytes(raw[pos:pos + 4], "little")
        if int.from_bytes(raw[pos + 8:pos + 16], "little") >> 62 == 0:
            out.append(pos)
        pos += HEADER_SIZE + ln
    return out


def run(fn, path: Path) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    code = fn(path, out=out)
    return code, out.getvalue()


def test_stats_of_a_clean_buffer(tmp_path: Path) -> None:
    make_buffer(tmp_path, 1000, ack=250)
    rep = inspect(tmp_path)
    assert rep.segments == len(list_segments(tmp_path)) > 1
    assert rep.last_seq == 1000 and rep.acked_seq == 250 and rep.unacked == 750
    assert rep.oldest_unacked_time_ns == T0 + 250 * 1000
    assert rep.newest_time_ns == T0 + 999 * 1000
    assert rep.corrupt_regions == 0 and rep.problems == []
    assert rep.size_bytes == sum(p.stat().st_size for p in tmp_path.iterdir())
    code, text = run(stats, tmp_path)
    assert code == 0
    assert "unacknowledged:  750 (acknowledged up to seq 250)" in text
    assert "last record:     2023-11-14T22:13:20.000999000Z" in text
    assert "corrupt:         0 region(s), 0 byte(s), 0 record(s) lost" in text
    assert "clean shutdown: yes" in text
    code, text = run(verify, tmp_path)
    assert code == 0 and "OK: " in text and "750 unacknowledged" in text


def test_verify_finds_damage_repair_fixes_it(tmp_path: Path) -> None:
    make_buffer(tmp_path, 1000)
    segs = [p for _, p in list_segments(tmp_path)]
    first_seq_2 = int(segs[1].name[:20])
    victim_off = data_frame_offsets(segs[1])[5]
    raw = bytearray(segs[1].read_bytes())
    raw[victim_off + HEADER_SIZE + 3] ^= 0x20
    segs[1].write_bytes(bytes(raw))
    tail = segs[-1]
    tail.write_bytes(tail.read_bytes()[:-30])  # a torn last write
    (tmp_path / STATE_NAME).write_bytes(bytes(100))  # NUL-filled state

    code, text = run(verify, tmp_path)
    assert code == 1
    assert f"{segs[1].name}: " in text and f"1 record(s) lost (seq {first_seq_2 + 5}..{first_seq_2 + 5})" in text
    assert "torn tail" in text and "state file unusable" in text
    assert "all NUL" in text
    before = [p.read_bytes() for p in segs]
    assert [p.read_bytes() for p in segs] == before  # verify changed nothing

    code, text = run(repair, tmp_path)
    assert code == 0, text
    assert "state file unusable" in text and "torn tail" in text and "corrupt region" in text
    assert "records lost 1" in text
    code, text = run(verify, tmp_path)
    assert code == 0, text
    rep = inspect(tmp_path)
    # corrupt record; torn frame; the rest of that unfinished write (records 900..999)
    assert rep.repaired_lost == 1 and rep.quarantine_entries == 3
    assert (tmp_path / QUARANTINE_NAME).stat().st_size > 0
    code, text = run(repair, tmp_path)
    assert code == 0 and "nothing to repair" in text

    q = DiskQueue.open(tmp_path)
    nums = []
    for _ in range(100):
        items = q.read(500, 1 << 22)
        if not items:
            break
        nums += [orjson.loads(p)["n"] for _, p in items]
        q.ack(items[-1][0])
    # the corrupt record and the torn last write are gone; everything else is there once
    assert nums == [i for i in range(900) if i != first_seq_2 + 4]
    assert q.depth == 0
    q.close()


def test_repair_refuses_a_queue_in_use(tmp_path: Path) -> None:
    q = DiskQueue.open(tmp_path)
    code, text = run(repair, tmp_path)
    assert code == 1 and "in use" in text
    q.close()


def test_missing_directory_and_usage(tmp_path: Path) -> None:
    assert run(stats, tmp_path / "nope")[0] == 1
    assert run(verify, tmp_path / "nope")[0] == 1
    assert main(["bogus", str(tmp_path)]) == 2
    assert main([]) == 2


def test_module_entry_point(tmp_path: Path) -> None:
    make_buffer(tmp_path, 50)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "shipper.buffer_tool", "verify", str(tmp_path)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and "every frame checked" in r.stdout
    r = subprocess.run([sys.executable, "-m", "shipper.buffer_tool", "stats", str(tmp_path)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and "records:         50 (seq 1..50)" in r.stdout


def test_the_parent_of_the_buffers_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """state_dir/buffer (one directory per sink) given instead of a sink's buffer: named
    as such with the buffers in it, and repair makes nothing there (found in a review:
    it said OK, and repair made a segment and a state file)."""
    q = DiskQueue.open(str(tmp_path / "buffer" / "siem"))
    q.append([b"x"])
    q.close()
    parent = tmp_path / "buffer"
    for fn in (verify, repair, stats):
        out = io.StringIO()
        assert fn(parent, out) == 1
        assert "not a buffer directory" in out.getvalue()
        assert str(parent / "siem") in out.getvalue()
    assert sorted(p.name for p in parent.iterdir()) == ["siem"]


def test_verify_counts_durable_records_whose_segment_is_gone(tmp_path: Path) -> None:
    """Found by fault injection: with its segment deleted (or cut short) by hand, verify
    said OK while the next start reported the records lost."""
    q = DiskQueue.open(str(tmp_path / "a"), fsync="always")
    q.append([b"r%d" % i for i in range(100)])
    q.ack(20)
    q.close()
    for _, seg in list_segments(tmp_path / "a"):
        seg.unlink()
    out = io.StringIO()
    assert verify(tmp_path / "a", out) == 1
    assert "80 record(s) up to seq 100 were made durable but are not on disk" in out.getvalue()
    rep = inspect(tmp_path / "a")
    assert rep.lost_records == 80


def test_stats_after_a_repair_names_the_first_record_it_holds(tmp_path: Path) -> None:
    """Found probing a daemon's buffer with a flipped byte: after `repair`, `stats` said
    "records: 999 (seq 2..1000)" while seq 1 was there and seq 6 was the one lost (the
    first seq was taken as next seq minus the records, which a gap frame breaks)."""
    make_buffer(tmp_path, 1000)
    seg = list_segments(tmp_path)[0][1]
    victim_off = data_frame_offsets(seg)[5]
    raw = bytearray(seg.read_bytes())
    raw[victim_off + HEADER_SIZE + 3] ^= 0x20
    seg.write_bytes(bytes(raw))
    assert run(repair, tmp_path)[0] == 0
    rep = inspect(tmp_path)
    assert rep.records == 999 and rep.repaired_lost == 1
    assert (rep.first_seq, rep.last_seq) == (1, 1000)
    assert "records:         999 (seq 1..1000)" in run(stats, tmp_path)[1]


def test_a_buffer_others_can_change_is_not_worked_on(tmp_path):
    """A security re-test: root's `buffer repair` of a buffer another user could change
    appended a torn tail through a `quarantine` link they planted, to a root-only file."""
    from shipper.buffer_tool import main

    buf = tmp_path / "buf"
    buf.mkdir(mode=0o700)
    buf.chmod(0o777)
    assert main(["repair", str(buf)]) == 1
    assert not any(buf.iterdir())
