"""Checkpoint store: atomic writes, and bad files reported (never raised)."""

from __future__ import annotations

import os

import orjson
import pytest

from shipper.checkpoint import (
    SCHEMA,
    CheckpointPathError,
    CheckpointStore,
    atomic_write,
    ensure_outside,
    remove_stale_temps,
)


def test_round_trip(tmp_path):
    path = tmp_path / "cp.json"
    store = CheckpointStore(str(path))
    assert store.load() == {}
    assert store.warnings and "missing" in store.warnings[0]
    assert store.corrupt_loads == 0  # a first start is not corruption
    pos = {"v": 1, "done": "@400000006b02a2aa2bcb057c", "pend": [], "f": None}
    store.set("/var/log/qmail/send", pos)
    assert store.save()
    doc = orjson.loads(path.read_bytes())
    assert doc["schema"] == SCHEMA
    assert doc["sources"] == {"/var/log/qmail/send": pos}
    again = CheckpointStore(str(path))
    assert again.load() == {"/var/log/qmail/send": pos}
    assert again.get("/var/log/qmail/send") == pos
    assert again.warnings == [] and again.corrupt_loads == 0
    assert sorted(os.listdir(tmp_path)) == ["cp.json"]  # no temp file left


@pytest.mark.parametrize(("content", "why"), [
    (b"", "empty"),
    (b"\x00" * 4096, "NUL"),
    (b'{"schema": 1, "sources": {"a": ', "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"schema": 99, "sources": {}}', "unknown schema"),
    (b'{"schema": 1}', "no 'sources'"),
])
def test_bad_file_reported_not_raised(tmp_path, content, why):
    path = tmp_path / "cp.json"
    path.write_bytes(content)
    store = CheckpointStore(str(path))
    assert store.load() == {}
    assert store.corrupt_loads == 1
    assert len(store.warnings) == 1 and why in store.warnings[0]
    assert (tmp_path / "cp.json.corrupt").read_bytes() == content  # kept for inspection
    store.set("k", {"x": 1})
    assert store.save()
    assert CheckpointStore(str(path)).load() == {"k": {"x": 1}}


def test_write_error_reported(tmp_path):
    store = CheckpointStore(str(tmp_path / "no" / "such" / "dir" / "cp.json"))
    store.set("k", 1)
    assert store.save() is False
    assert store.write_errors == 1 and "write failed" in store.warnings[-1]


def test_atomic_write_replaces(tmp_path):
    p = tmp_path / "f"
    atomic_write(str(p), b"one")
    atomic_write(str(p), b"two")
    assert p.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["f"]


def test_never_inside_a_log_dir(tmp_path):
    logdir = tmp_path / "log"
    logdir.mkdir()
    with pytest.raises(CheckpointPathError):
        ensure_outside(str(logdir / "cp.json"), [str(logdir)])
    with pytest.raises(CheckpointPathError):
        ensure_outside(str(logdir / "sub" / "cp.json"), [str(logdir) + "/"])
    ensure_outside(str(tmp_path / "log2" / "cp.json"), [str(logdir)])  # a sibling is fine


def test_a_failed_write_leaves_no_temp_file_and_dead_ones_are_removed(tmp_path, monkeypatch):
    """Found by fault injection on a full state_dir: a write that failed left its
    `<name>.tmp.<pid>` (megabytes for the tracking state) holding the space the buffer
    needed, and a killed shipper's temp files stayed for good."""
    import subprocess
    import sys

    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        atomic_write(str(tmp_path / "tracking.json"), b"x" * 100)
    monkeypatch.setattr(os, "write", real_write)
    assert os.listdir(tmp_path) == []
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / f"q.json.tmp.{dead}").write_bytes(b"half")  # its writer is gone
    (tmp_path / f"mine.json.tmp.{os.getpid()}").write_bytes(b"busy")  # a live writer's
    (tmp_path / "sub" / "q.json").write_bytes(b"{}")
    assert remove_stale_temps(str(tmp_path)) == 1
    assert sorted(os.listdir(tmp_path / "sub")) == ["q.json"]
    assert (tmp_path / f"mine.json.tmp.{os.getpid()}").exists()


def test_an_older_snapshot_never_overwrites_a_newer_one(tmp_path):
    """A write that waited (in a thread) behind a stop's last save must not take the
    file back to the position before it."""
    path = tmp_path / "cp.json"
    store = CheckpointStore(str(path))
    store.set("src", {"off": 100})
    old = store.snapshot()
    store.set("src", {"off": 200})
    new = store.snapshot()
    assert old is not None and new is not None
    assert store.write(new)
    assert store.write(old)  # nothing to do: a newer one is on disk
    assert orjson.loads(path.read_bytes())["sources"] == {"src": {"off": 200}}
    assert store.writes == 1


def test_a_position_that_cannot_be_serialised_is_a_failed_write_not_a_raise(tmp_path):
    store = CheckpointStore(str(tmp_path / "cp.json"))
    store.set("src", {"off": object()})
    assert store.snapshot() is None and not store.save()
    assert store.write_errors == 2 and "write failed" in store.warnings[-1]


def test_atomic_write_never_writes_through_a_link_planted_at_its_temp_name(tmp_path):
    """A security review: the temp file was opened O_CREAT|O_TRUNC, following a symlink
    another user had put at its name (its target, a root-owned file, overwritten)."""
    from shipper.checkpoint import atomic_write

    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    path = tmp_path / "metrics.addr"
    os.symlink(victim, f"{path}.tmp.{os.getpid()}")
    atomic_write(str(path), b"127.0.0.1:9100\n")
    assert victim.read_bytes() == b"precious"
    assert path.read_bytes() == b"127.0.0.1:9100\n" and not path.is_symlink()


def test_a_directory_others_can_write_is_unsafe(tmp_path):
    """A security review: a state_dir or buffer directory another user made first (or
    can write) let them plant links the daemon wrote through, as root."""
    from shipper.checkpoint import unsafe_dir_problem

    mine = tmp_path / "state"
    assert unsafe_dir_problem(str(mine)) is None  # made by us later, 0700
    mine.mkdir(mode=0o700)
    assert unsafe_dir_problem(str(mine)) is None and unsafe_dir_problem(str(mine / "buffer" / "siem")) is None
    mine.chmod(0o770)
    assert "is writable by its group (mode 770)" in unsafe_dir_problem(str(mine))
    mine.chmod(0o777)
    assert "is writable by all (mode 777)" in unsafe_dir_problem(str(mine))
    # above it: writable by all is only safe with the sticky bit (/tmp)
    assert "a directory above" in unsafe_dir_problem(str(mine / "buffer"))
    mine.chmod(0o1777)
    assert unsafe_dir_problem(str(mine / "buffer")) is None
    assert unsafe_dir_problem("/tmp") is not None  # a state_dir of /tmp itself
    mine.chmod(0o700)
    if os.geteuid() == 0:  # another user's directory: only root can make one here
        os.chown(mine, 65534, 65534)
        assert "belongs to nobody" in unsafe_dir_problem(str(mine))
        assert "a directory above" in unsafe_dir_problem(str(mine / "buffer"))


def test_a_link_on_the_way_is_judged_by_where_it_leads(tmp_path):
    """A review: a link's own mode reads 777, so systemd's DynamicUser= (/var/lib/shipper
    a link to private/shipper) or /var on another disk was refused, and a link into a
    directory all can write passed. Judged by its target now."""
    from shipper.checkpoint import unsafe_dir_problem

    private = tmp_path / "private"
    (private / "shipper").mkdir(parents=True, mode=0o700)
    private.chmod(0o700)
    (tmp_path / "shipper").symlink_to(private / "shipper")
    assert unsafe_dir_problem(str(tmp_path / "shipper")) is None
    assert unsafe_dir_problem(str(tmp_path / "shipper" / "buffer" / "siem")) is None
    disk = tmp_path / "disk"
    (disk / "var").mkdir(parents=True)
    (tmp_path / "var").symlink_to(disk / "var")  # /var on another disk
    assert unsafe_dir_problem(str(tmp_path / "var" / "lib" / "shipper")) is None
    (private / "shipper").chmod(0o777)
    why = unsafe_dir_problem(str(tmp_path / "shipper"))
    assert why is not None and f"{private / 'shipper'} (where {tmp_path / 'shipper'} leads) is writable by all" in why


def test_a_directory_above_that_a_group_can_write_is_unsafe(tmp_path):
    """A security re-test: a parent writable by its group (Debian's /usr/local and
    /var/local are root:staff 2775) let a member rename the state directory away and
    put their own in its place."""
    from shipper.checkpoint import unsafe_dir_problem

    top = tmp_path / "local"
    (top / "state").mkdir(parents=True, mode=0o700)
    if os.geteuid() == 0:  # root's group is root's alone: give it staff's (50)
        os.chown(top, 0, 50)
    assert top.stat().st_gid != 0
    top.chmod(0o2775)
    why = unsafe_dir_problem(str(top / "state"))
    assert why is not None and "a directory above" in why and "writable by its group" in why
    top.chmod(0o3775)  # sticky: members cannot rename what is not theirs
    assert unsafe_dir_problem(str(top / "state")) is None


def test_a_directory_in_place_of_the_checkpoint_is_moved_aside(tmp_path):
    """Found by the buffer hunt: a directory where the checkpoint file belongs (a mkdir -p
    or a restore gone wrong) refused every start, a crash loop under supervise, and no
    save could replace it. Moved aside as a corrupt file is, said, and saved anew."""
    from shipper.assemble import check_state_access
    from shipper.config import load_config_text

    cfg = load_config_text(f'state_dir = "{tmp_path}/state"\n[sources.q]\ntype = "multilog"\n'
                           f'paths = ["{tmp_path}/log"]\n[sinks.o]\ntype = "file"\npath = "{tmp_path}/o"\n')
    from shipper.checkpoint import checkpoint_path
    path = checkpoint_path(cfg.state_dir, "q")
    os.makedirs(os.path.join(path, "inside"))
    with open(path + ".corrupt", "wb") as f:  # an earlier corrupt checkpoint's (a review)
        f.write(b"{")
    check_state_access(cfg)  # no refusal: the load below takes care of it
    assert CheckpointStore(path).load(set_aside=False) == {} and os.path.isdir(path)  # a look only
    store = CheckpointStore(path)
    assert store.load() == {}
    assert any("a directory, not a file: moved aside" in w for w in store.warnings), store.warnings
    assert os.path.isdir(path + ".1.corrupt") and not os.path.exists(path)
    store.set("k", {"x": 1})
    assert store.save() and CheckpointStore(path).load() == {"k": {"x": 1}}
