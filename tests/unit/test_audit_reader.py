"""AuditTail reads back what AuditLog writes, in order, across rotations, even when it falls a
whole file behind; AuditFilter picks lines by time and user."""

from __future__ import annotations

from pathlib import Path

import orjson

from kvstore.node.audit import AuditLog
from kvstore.node.audit_reader import AuditFilter, AuditTail, parse_line, since_text


def _numbers(tail: AuditTail) -> list[int]:
    found = []
    while lines := tail.read():
        found += [orjson.loads(line)["n"] for line in lines]
    return found


def test_reads_rotated_files_oldest_first_then_follows_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=600, keep=5)
    try:
        for n in range(20):
            log.record("e", n=n)
        assert path.with_name("audit.jsonl.1").exists()
        tail = AuditTail(path, keep=5)
        assert _numbers(tail) == list(range(20))
        for n in range(20, 24):  # a few lines into the live file, read as they come
            log.record("e", n=n)
            assert _numbers(tail) == [n]
        for n in range(24, 40):  # two rotations before the reader looks again
            log.record("e", n=n)
        assert _numbers(tail) == list(range(24, 40))
        tail.close()
        assert tail.read() == []
    finally:
        log.close()


def test_a_reader_behind_the_oldest_kept_file_goes_on_from_the_oldest_left(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=300, keep=2)
    try:
        log.record("e", n=0)
        tail = AuditTail(path, keep=2)
        assert _numbers(tail) == [0]
        for n in range(1, 40):  # its file rotated out of the kept ones
            log.record("e", n=n)
        rest = _numbers(tail)
        assert rest == sorted(rest) and rest[-1] == 39 and len(rest) < 39
    finally:
        log.close()


def test_filter_by_time_and_user() -> None:
    line = {"ts": "2026-12-03T10:00:05Z", "event": "login_ok", "user": "ann"}
    assert AuditFilter(since_text("2026-12-03T10:00:05.900")).matches(line)
    assert not AuditFilter(since_text("2026-12-03T11:00:06+01:00")).matches(line)
    assert AuditFilter(user="ann").matches(line)
    assert AuditFilter(user="bob").matches({"event": "user_created", "user": "ann", "by": "bob"})
    assert AuditFilter(user="bob").matches({"event": "refusals_aggregated", "users": ["ann", "bob"]})
    assert not AuditFilter(user="bob").matches(line)
    assert parse_line(b"[1]") is None and parse_line(b"{") is None
