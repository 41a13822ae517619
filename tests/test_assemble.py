"""assemble: the tracking state kept across restarts must never stop the shipper: a state
file of any shape is set aside, and a correlator failure costs summaries, not records."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from shipper.assemble import Tracking
from shipper.config import load_config_text
from shipper.parse import LineParser

LINES = [b"@400000005a49ba341eefa7a4 new msg 1", b"@400000005a49ba341eefa7a5 info msg 1: bytes 10 "
         b"from <a@example.org> qp 7 uid 0", b"@400000005a49ba341eefa7a6 end msg 1"]


def _config(tmp: Path):
    return load_config_text(f'state_dir = "{tmp}/state"\n[sources.q]\ntype = "multilog"\n'
                            f'paths = ["{tmp}/log"]\n[sinks.o]\ntype = "stdout"\n'
                            '[tracking]\nenabled = true\n')


def _records() -> list[dict]:
    p = LineParser(source="t", file_id="0123456789abcdef")
    return [p.parse(ln + b"\n", i * 100).to_dict() for i, ln in enumerate(LINES)]


@pytest.mark.parametrize("state", [
    b"[1,2,3]",
    b'{"version":1,"qmail":{"mails":"x"}}',
    b'{"version":1,"qmail":{"mails":[["k",{"rcpts":["zz"]}]]},"last_ns":"abc"}',
    b"\x00" * 64,
    b"{",
])
def test_a_tracking_state_of_any_shape_is_set_aside(tmp_path: Path, state: bytes, caplog) -> None:
    cfg = _config(tmp_path)
    (tmp_path / "state").mkdir()
    path = tmp_path / "state" / "tracking.json"
    path.write_bytes(state)
    t = Tracking(cfg)
    out = t(_records())  # whatever the restored state held, the batch goes through
    out += t.correlator.finish()
    assert [o["event"] for o in out] == ["mail"]
    t.save()
    assert orjson.loads(path.read_bytes())  # a good state again
    assert t.failures == 1  # every one of these is unusable
    assert (tmp_path / "state" / "tracking.json.corrupt").read_bytes() == state
    assert "set aside" in caplog.text


def test_a_correlator_failure_costs_the_summaries_not_the_batch(tmp_path: Path) -> None:
    t = Tracking(_config(tmp_path))

    class Broken:
        def feed(self, records):
            raise KeyError("msg")
    t.correlator = Broken()  # type: ignore[assignment]
    # a fresh correlator takes over and gets the batch again
    assert [o["event"] for o in t(_records()) + t.correlator.finish()] == ["mail"]
    assert t.failures == 1
