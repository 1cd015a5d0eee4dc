"""The profile's two renderings from known counts: collapsed stacks and speedscope's file format."""

from __future__ import annotations

from kvstore.node.profiler import SPEEDSCOPE_SCHEMA, Profile

MAIN = ("main", "kvstore/cli/kvstored.py", 10)
PUT = ("Engine.put", "kvstore/node/engine.py", 92)
ODD = ("f;g", "<string>", 1)


def test_collapsed_is_one_line_a_stack_with_its_sample_count() -> None:
    profile = Profile({(MAIN, PUT): 7, (MAIN,): 2, (MAIN, ODD): 1}, 0.005)
    assert profile.collapsed().decode().splitlines() == [
        "main (kvstore/cli/kvstored.py:10) 2",
        "main (kvstore/cli/kvstored.py:10);Engine.put (kvstore/node/engine.py:92) 7",
        "main (kvstore/cli/kvstored.py:10);f:g (<string>:1) 1",  # `;` would split the frame
    ]
    assert profile.samples == 10
    assert Profile({}, 0.005).collapsed() == b""


def test_speedscope_shares_frames_and_weighs_samples_in_seconds() -> None:
    document = Profile({(MAIN, PUT): 4, (MAIN,): 2}, 0.005).speedscope("loop")
    assert document["$schema"] == SPEEDSCOPE_SCHEMA
    assert document["shared"]["frames"] == [
        {"name": "main", "file": "kvstore/cli/kvstored.py", "line": 10},
        {"name": "Engine.put", "file": "kvstore/node/engine.py", "line": 92},
    ]
    (profile,) = document["profiles"]
    assert profile["samples"] == [[0, 1], [0]]
    assert profile["weights"] == [0.02, 0.01]
    assert profile["type"] == "sampled" and profile["endValue"] == 0.03
