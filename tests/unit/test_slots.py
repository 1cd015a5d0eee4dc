"""Replication slots (replication/slots.py) in process: the WAL a slot keeps, the bound on
it, feedback moving a slot, what survives a restart, and lag. test_checkpoint_retention.py
checks the checkpoint asks for the retention on the event loop."""

from __future__ import annotations

import json
from pathlib import Path

from kvstore.replication.slots import LagTracker, SlotRegistry

MiB = 1 << 20


def registry(tmp_path: Path, max_keep_bytes: int = 10 * MiB) -> SlotRegistry:
    return SlotRegistry(tmp_path / "replication" / "slots.json", max_keep_bytes)


def saved(tmp_path: Path) -> dict[str, dict[str, object]]:
    document: dict[str, dict[str, object]] = json.loads((tmp_path / "replication" / "slots.json").read_text())
    return document


def test_without_slots_the_wal_from_the_redo_lsn_is_kept(tmp_path: Path) -> None:
    assert registry(tmp_path).retention(redo_lsn=5000, end_lsn=9000) == 5000


def test_the_oldest_slot_behind_the_redo_lsn_keeps_the_wal_from_its_restart_lsn(tmp_path: Path) -> None:
    slots = registry(tmp_path)
    slots.acquire("r1", 1000)
    slots.acquire("r2", 3000)
    slots.acquire("ahead", 8000)
    assert slots.retention(redo_lsn=5000, end_lsn=9000) == 1000
    slots.drop("r1")
    assert slots.retention(redo_lsn=5000, end_lsn=9000) == 3000
    slots.drop("r2")
    assert slots.retention(redo_lsn=5000, end_lsn=9000) == 5000  # a slot ahead holds nothing back


def test_a_slot_over_its_bound_is_lost_and_keeps_nothing(tmp_path: Path) -> None:
    slots = registry(tmp_path, max_keep_bytes=MiB)
    slots.acquire("near", 4 * MiB)
    slots.acquire("far", 1000)
    assert slots.retention(redo_lsn=5 * MiB, end_lsn=5 * MiB) == 4 * MiB
    assert slots.slots["far"].lost and not slots.slots["near"].lost
    assert saved(tmp_path)["far"] == {"restart_lsn": 1000, "lost": True}
    # Exactly at the bound is still kept.
    assert slots.retention(redo_lsn=6 * MiB, end_lsn=5 * MiB) == 4 * MiB and not slots.slots["near"].lost


def test_feedback_moves_the_restart_lsn_forward_only_and_never_for_a_lost_slot(tmp_path: Path) -> None:
    slots = registry(tmp_path, max_keep_bytes=MiB)
    slots.acquire("r1", 1000)
    moved = slots.feedback("r1", timeline=1, write=3000, flush=2000, apply=1500, address="127.0.0.2")
    assert moved is not None and moved.restart_lsn == 2000  # the flush LSN: durable on the replica
    assert (moved.write_lsn, moved.apply_lsn, moved.address) == (3000, 1500, "127.0.0.2")
    assert moved.last_contact is not None
    slots.feedback("r1", timeline=1, write=3000, flush=1200, apply=1200, address="127.0.0.2")
    assert slots.slots["r1"].restart_lsn == 2000 and slots.slots["r1"].flush_lsn == 1200
    slots.retention(redo_lsn=10 * MiB, end_lsn=10 * MiB)  # r1 is far behind: lost
    slots.feedback("r1", timeline=1, write=9 * MiB, flush=9 * MiB, apply=9 * MiB, address="127.0.0.2")
    assert slots.slots["r1"].lost and slots.slots["r1"].restart_lsn == 2000
    assert slots.feedback("nobody", timeline=1, write=1, flush=1, apply=1, address="x") is None


def test_acquire_keeps_a_slot_that_has_the_wal_and_remakes_one_that_cannot(tmp_path: Path) -> None:
    slots = registry(tmp_path, max_keep_bytes=MiB)
    first = slots.acquire("r1", 5000)
    assert slots.acquire("r1", 7000) is first and first.restart_lsn == 5000  # resumes further on
    earlier = slots.acquire("r1", 3000)  # asks for WAL before the slot's: a new slot there
    assert earlier is not first and earlier.restart_lsn == 3000
    slots.retention(redo_lsn=10 * MiB, end_lsn=10 * MiB)
    assert earlier.lost
    revived = slots.acquire("r1", 10 * MiB)  # after a new base backup
    assert not revived.lost and revived.restart_lsn == 10 * MiB


def test_slots_are_saved_and_read_back_with_their_positions_and_loss(tmp_path: Path) -> None:
    slots = registry(tmp_path, max_keep_bytes=MiB)
    slots.acquire("kept", 4 * MiB)
    slots.acquire("lost", 0)
    slots.acquire("dropped", 4 * MiB)
    slots.drop("dropped")
    slots.feedback("kept", timeline=1, write=4 * MiB + 10, flush=4 * MiB + 10, apply=0, address="a")
    slots.retention(redo_lsn=5 * MiB, end_lsn=5 * MiB)  # saves, as a checkpoint does
    again = registry(tmp_path, max_keep_bytes=MiB)
    assert {name: (slot.restart_lsn, slot.lost) for name, slot in again.slots.items()} == {
        "kept": (4 * MiB + 10, False),
        "lost": (0, True),
    }
    assert again.slots["kept"].last_contact is None  # reports are not saved
    assert not slots.drop("dropped")


def test_describe_says_unknown_until_a_replica_reports(tmp_path: Path) -> None:
    slots = registry(tmp_path)
    slots.acquire("r1", 4096)
    (row,) = slots.describe(committed_lsn=9000, now=100.0)
    assert (row["state"], row["restart_lsn"], row["lag_bytes"], row["lag_s"]) == ("disconnected", "0/1000", None, None)
    slot = slots.feedback("r1", timeline=1, write=8000, flush=8000, apply=7000, address="a")
    assert slot is not None
    slot.streams, slot.last_contact = 1, 99.5
    (row,) = slots.describe(committed_lsn=9000, now=100.0)
    assert (row["state"], row["lag_bytes"], row["last_contact_s_ago"]) == ("streaming", 2000, 0.5)


def test_lag_is_the_time_since_the_primary_first_committed_past_the_replica() -> None:
    lag = LagTracker()
    for lsn, at in ((100, 10.0), (200, 11.0), (200, 12.0), (300, 13.0)):
        lag.sample(lsn, at)
    assert [sample[0] for sample in lag.samples] == [100, 200, 300]  # no sample without progress
    assert lag.lag_s(lsn=150, committed_lsn=300, now=20.0) == 9.0  # committed past 150 at 11.0
    assert lag.lag_s(lsn=50, committed_lsn=300, now=20.0) == 10.0
    assert lag.lag_s(lsn=300, committed_lsn=300, now=20.0) == 0.0  # has everything, idle or not
