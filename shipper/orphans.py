"""What a removed or renamed source or sink leaves in the state directory.

* A sink's disk buffer lives in ``BUFFER_ROOT/<sink name>``. When the sink is removed
  or renamed (a reload or a restart), nothing reads that queue any more: its records
  stay on disk, undelivered. ``find_orphan_buffers`` finds such queues so that the
  daemon says so at every start and reload and exports them as metrics, instead of
  keeping them forever unseen (it never deletes them: adding the sink back under its
  old name delivers them).
* A source's checkpoints live in ``state_dir/checkpoints/<source name>.json``, keyed
  by the log directory's path. A source renamed in the configuration found no
  checkpoint under its new name and started from ``start_position`` again: with
  ``all`` it sent again every line multilog still kept (62,775 duplicates in a probe),
  with ``end`` it skipped what was written while it was stopped.
  ``adopt_checkpoints`` hands the positions of a source no longer configured to the
  configured source whose globs now match those paths.
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipper.checkpoint import CheckpointStore, checkpoint_dir, checkpoint_path
from shipper.config import Config, glob_matches
from shipper.diskqueue import STATE_MAGIC, STATE_NAME, decode_state, list_segments, walk_segment

log = logging.getLogger("shipper")


@dataclass(slots=True)
class OrphanBuffer:
    path: str
    records: int  # not acknowledged
    bytes: int  # segment files on disk


def _buffer_roots(config: Config) -> set[str]:
    roots = {os.path.abspath(os.path.join(config.state_dir, "buffer"))}
    if config.buffer.path:
        roots.add(os.path.abspath(config.buffer.path))
    for s in config.sinks.values():
        if s.buffer.type == "disk":
            roots.add(os.path.dirname(os.path.abspath(s.buffer.path)))
    return roots


def _in_use(state: Path) -> bool:
    """Whether another process holds this queue (its lock is on the state file)."""
    try:
        fd = os.open(state, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _queue_state(path: Path) -> bool:
    """Whether ``path`` is a disk queue's state file (its magic)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(STATE_MAGIC)) == STATE_MAGIC
    except OSError:
        return False


def _unacked(root: Path) -> tuple[int, int]:
    """(records not acknowledged, bytes of segments) of a queue, read without changing
    it: the state's acknowledged seq and the last segment's last record."""
    segments = list_segments(root)
    size = 0
    for _, p in segments:
        try:
            size += p.stat().st_size
        except OSError:
            pass
    if not segments:
        return 0, size
    ack = segments[0][0] - 1
    try:
        state, _ = decode_state((root / STATE_NAME).read_bytes())
        if state is not None:
            ack = int(state.get("ack", ack))
    except (OSError, TypeError, ValueError):
        pass
    first, last_path = segments[-1]
    try:
        w = walk_segment(last_path.read_bytes(), first)
        last_seq = w.next_seq - 1
    except OSError:
        last_seq = first - 1
    return max(0, last_seq - ack), size


def find_orphan_buffers(config: Config) -> list[OrphanBuffer]:
    """Disk queues in the buffer directories that no configured sink uses."""
    owned = {os.path.abspath(s.buffer.path) for s in config.sinks.values()
             if s.buffer.type == "disk"}
    out = []
    for root in sorted(_buffer_roots(config)):
        try:
            entries = sorted(os.scandir(root), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            path = os.path.abspath(e.path)
            if path in owned or not e.is_dir(follow_symlinks=False):
                continue
            p = Path(path)
            try:
                if not list_segments(p) and not _queue_state(p / STATE_NAME):
                    continue  # not a queue (another program's directory with a "state")
                if _in_use(p / STATE_NAME):
                    continue  # another process's (a shipper with this buffer path)
                records, size = _unacked(p)
            except OSError:
                continue
            out.append(OrphanBuffer(path, records, size))
    return out


def report_orphan_buffers(config: Config) -> list[OrphanBuffer]:
    """Say in the log which queues no sink reads any more (each start and reload)."""
    try:
        found = find_orphan_buffers(config)
    except Exception as exc:  # noqa: BLE001 - a look around must never stop the start
        log.warning("cannot look for buffers of removed sinks: %s", exc)
        return []
    for o in found:
        if o.records:
            log.warning("buffer %s belongs to no configured sink (removed or renamed?): %d "
                        "records in it were never delivered; add the sink back under the name "
                        "%s to send them (or, stopped, rename the directory to the new sink's "
                        "name; `shipper buffer stats %s` shows them)", o.path, o.records,
                        os.path.basename(o.path), o.path)
        else:
            log.info("buffer %s belongs to no configured sink and holds nothing undelivered: "
                     "it may be removed", o.path)
    return found


# ---------------------------------------------------------------- checkpoints


def _file_position(position: Any) -> bool:
    """Whether a checkpointed position is a file follower's (else a multilog one's)."""
    return isinstance(position, dict) and position.get("kind") == "file"


def adopt_checkpoints(config: Config) -> list[tuple[str, str, str]]:
    """Move the positions a source left for paths it no longer follows (it was removed,
    renamed, or its globs changed) into the checkpoint file of the configured source
    that now follows them, unless it has one of its own. Returns (path, from source,
    to source) of each."""
    cdir = checkpoint_dir(config.state_dir)
    try:
        names = sorted(n for n in os.listdir(cdir) if n.endswith(".json"))
    except OSError:
        return []
    configured = {name: s for name, s in config.sources.items() if s.type != "stdin"}
    if not configured:
        return []

    def follows(name: str, key: str) -> bool:
        return any(glob_matches(key, os.path.abspath(pat)) for pat in configured[name].paths)

    moved: list[tuple[str, str, str]] = []
    for old in (n[:-5] for n in names):
        old_store = CheckpointStore(checkpoint_path(config.state_dir, old))
        positions = old_store.load(set_aside=False)
        taken = []
        targets: dict[str, CheckpointStore] = {}  # read afresh: an earlier round may have written them
        for key, position in positions.items():
            if old in configured and follows(old, key):
                continue  # still its own
            for name in configured:
                if name == old or not follows(name, key):
                    continue
                if (configured[name].type == "file") != _file_position(position):
                    continue  # a multilog directory's position is no file's, nor the reverse
                target = targets.get(name)
                if target is None:
                    target = targets[name] = CheckpointStore(checkpoint_path(config.state_dir, name))
                    target.load(set_aside=False)
                if target.corrupt_loads:
                    break  # its source sets it aside and says so; the position waits here
                if target.get(key) is None:
                    target.set(key, position)
                    moved.append((key, old, name))
                    taken.append(key)
                break
        if not taken:
            continue
        written = [t.save() for t in targets.values() if not t.corrupt_loads]
        if not all(written):  # the new owners first: never lose a position
            raise OSError(f"cannot write the checkpoints of {', '.join(targets)}")
        for key in taken:
            old_store.pop(key)
        if old_store.keys():
            if not old_store.save():
                raise OSError(f"cannot write {old_store.path}")
        else:
            os.unlink(old_store.path)
    for key, old, new in moved:
        log.info("source %s resumes %s where source %s left it (renamed or moved in the "
                 "configuration?)", new, key, old)
    return moved
