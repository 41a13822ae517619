"""Dead-letter file (shipper.sinks.deadletter): refused batches kept, capped, counted."""

from __future__ import annotations

from pathlib import Path

import orjson
from conftest import FIXTURES

from shipper.parse import LineParser
from shipper.sinks.base import PermanentError
from shipper.sinks.deadletter import DeadLetterFile


def fixture_records() -> list[dict]:
    lines = (FIXTURES / "sink_lines.log").read_bytes().splitlines()
    assert lines[0].startswith(b"# source:")
    parser = LineParser(source="/var/log/qmail/current", file_id="00112233aabbccdd")
    return [parser.parse(ln, i * 80).to_dict() for i, ln in enumerate(lines[1:])]


def test_batches_written_with_error_and_response(tmp_path: Path):
    recs = fixture_records()
    dl = DeadLetterFile(str(tmp_path / "d" / "x.ndjson"), sink="siem")
    dl(recs[:2], PermanentError("siem: HTTP 400 Bad Request", response='{"error":"bad"}'))
    dl.write(recs[2:5], ValueError("other"))
    lines = [orjson.loads(x) for x in (tmp_path / "d" / "x.ndjson").read_bytes().splitlines()]
    assert [e["records"] for e in lines] == [recs[:2], recs[2:5]]
    assert lines[0]["response"] == '{"error":"bad"}' and lines[0]["error"] == "siem: HTTP 400 Bad Request"
    assert lines[1]["response"] == "" and lines[1]["count"] == 3 and lines[1]["sink"] == "siem"
    assert dl.batches == 2 and dl.records == 5
    assert oct((tmp_path / "d" / "x.ndjson").stat().st_mode & 0o777) == "0o600"


def test_capped_with_rotation_and_counted(tmp_path: Path):
    recs = fixture_records()
    path = tmp_path / "x.ndjson"
    dl = DeadLetterFile(str(path), max_bytes=3000, keep=2)
    for i in range(20):
        dl.write(recs[i:i + 2], PermanentError(f"refusal {i}"))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["x.ndjson", "x.ndjson.1", "x.ndjson.2"]
    assert dl.files_dropped > 0 and dl.batches == 20
    newest = [orjson.loads(x)["error"] for x in path.read_bytes().splitlines()]
    assert newest[-1] == "refusal 19"
    for name in names:  # a batch is never split across files
        for line in (tmp_path / name).read_bytes().splitlines():
            assert len(orjson.loads(line)["records"]) == 2
