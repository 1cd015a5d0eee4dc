"""GET /v1/admin/profile and `kvctl profile` against a real node, loaded by `kvb set-heavy`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from support.harness import CHEAP_HASHING, NodeProcess
from support.kvctl_runner import as_env, kvctl, ok
from support.sessions import bearer, login_token
from support.waiting import wait_until

# Answered PUTs: kvb's load has reached the node once these count.
PUT_METRIC = "kvstore_kv_operations_total{"
PASSWORD = "profile-writer-password"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    process = NodeProcess(tmp_path_factory.mktemp("profile") / "node", env=CHEAP_HASHING)
    try:
        process.start()
        yield process
    finally:
        process.close()


@pytest.fixture
def load(node: NodeProcess, tmp_path: Path) -> Iterator[None]:
    """kvb set-heavy until the test is done: the hot path a profile must show."""
    kvb = subprocess.Popen(
        [sys.executable, "-m", "kvstore.cli.kvb", "set-heavy", "--url", node.url, "--token", node.token()]
        + ["--engine", "python", "--processes", "1", "--concurrency", "8", "--duration", "120"]
        + ["--keys", "1000", "--value-size", "100", "--output-prefix", str(tmp_path / "kvb")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "KVCTL_CONFIG": str(tmp_path / "no-login.json")},
    )
    try:
        wait_until(lambda: _put_count(node) >= 200, timeout_s=30, what="kvb's PUTs reach the node")
        yield
        assert kvb.poll() is None, kvb.stderr.read() if kvb.stderr else ""  # loaded the node throughout
    finally:
        kvb.kill()
        kvb.wait()


def _put_count(node: NodeProcess) -> float:
    text = httpx.get(f"{node.url}/metrics", timeout=10).text
    lines = text.splitlines()
    counts = [line.rsplit(" ", 1)[1] for line in lines if line.startswith(PUT_METRIC) and 'op="put"' in line]
    return sum(float(count) for count in counts)


def _profile(client: httpx.Client, **params: str) -> httpx.Response:
    return client.get("/v1/admin/profile", params=params, timeout=90)


def test_only_superusers_and_bounded_seconds(node: NodeProcess) -> None:
    with node.client() as admin:
        created = admin.post("/v1/admin/users", json={"name": "prof-w", "password": PASSWORD, "roles": ["writer"]})
        assert created.status_code == 201, created.text
        for params, message in [
            ({}, "'seconds' is required"),
            ({"seconds": "0"}, "between 1 and 60"),
            ({"seconds": "61"}, "between 1 and 60"),
            ({"seconds": "two"}, "must be an integer"),
            ({"seconds": "1", "format": "svg"}, "collapsed or speedscope"),
            ({"seconds": "1", "interval": "1"}, "unknown query parameter 'interval'"),
        ]:
            response = _profile(admin, **params)
            assert response.status_code == 400, (params, response.text)
            assert message in response.json()["error"]["message"]
    with bearer(node, login_token(node, "prof-w", PASSWORD)) as writer:
        refused = _profile(writer, seconds="1")
        assert refused.status_code == 403
        assert "admin routes need the admin role" in refused.json()["error"]["message"]


@pytest.mark.usefixtures("load")
def test_collapsed_profile_under_load_names_the_put_path_and_one_runs_at_a_time(node: NodeProcess) -> None:
    # Two at once, whichever reaches the node first samples for 2 s and the other is refused.
    with node.client() as admin, ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: _profile(admin, seconds="2"), range(2)))
    assert sorted(answer.status_code for answer in answers) == [200, 409], [answer.text for answer in answers]
    (refused,) = [answer for answer in answers if answer.status_code == 409]
    assert "already running" in refused.json()["error"]["message"]
    (response,) = [answer for answer in answers if answer.status_code == 200]
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    stacks = {}
    for line in lines:
        stack, count = line.rsplit(" ", 1)
        stacks[stack] = int(count)
    # One sample per 5 ms of the node's CPU time: fewer than 400 in 2 s while it waits for fsync.
    assert sum(stacks.values()) > 20
    frames = {frame.split(" (")[0] for stack in stacks for frame in stack.split(";")}
    assert {"KvApi._put", "Engine.put"} <= frames, sorted(frames)


@pytest.mark.usefixtures("load")
def test_speedscope_profile_is_speedscope_json(node: NodeProcess) -> None:
    with node.client() as admin:
        response = _profile(admin, seconds="2", format="speedscope")
    assert response.status_code == 200, response.text
    document = response.json()
    assert {"$schema", "shared", "profiles"} <= document.keys()
    assert document["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = document["shared"]["frames"]
    (profile,) = document["profiles"]
    assert profile["type"] == "sampled" and profile["unit"] == "seconds"
    assert len(profile["samples"]) == len(profile["weights"]) > 0
    assert all(0 <= index < len(frames) for sample in profile["samples"] for index in sample)
    assert "Engine.put" in {frame["name"] for frame in frames}
    assert profile["endValue"] == pytest.approx(sum(profile["weights"]))


@pytest.mark.usefixtures("load")
def test_kvctl_profile_writes_the_file_naming_the_put_path(node: NodeProcess, tmp_path: Path) -> None:
    out = tmp_path / "loop.speedscope.json"
    printed = ok(
        kvctl(
            "profile",
            "--seconds",
            "1",
            "-o",
            str(out),
            "--format",
            "speedscope",
            config=tmp_path / "login",
            env=as_env(node),
        )
    )
    assert str(out) in printed
    assert json.loads(out.read_bytes())["profiles"][0]["type"] == "sampled"
    collapsed = tmp_path / "loop.folded"
    ok(kvctl("profile", "--seconds", "1", "-o", str(collapsed), config=tmp_path / "login", env=as_env(node)))
    lines = collapsed.read_text().splitlines()
    assert all(line.rsplit(" ", 1)[1].isdigit() for line in lines)
    frames = {frame.split(" (")[0] for line in lines for frame in line.rsplit(" ", 1)[0].split(";")}
    assert {"KvApi._put", "Engine.put"} <= frames, sorted(frames)
