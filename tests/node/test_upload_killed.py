"""An upload killed with SIGKILL half way leaves no object: not listed, not readable, and the name
still free for the next upload. Against a directory and SeaweedFS (a multipart upload with two
parts sent). The uploader is a real process whose source stops giving bytes part way through,
so the kill lands mid-upload every time, not by timing."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.node.archive.s3 import MIN_PART_BYTES, S3Store
from kvstore.node.archive.store import ObjectMissing, ObjectStore, open_store
from support.s3server import S3Server, seaweedfs
from support.waiting import wait_until

SIZE = 4 * MIN_PART_BYTES  # 20 MiB: four parts of 5 MiB

# Reads `path` for `store.put`, and once `stall_after` bytes have been read in all (the store may
# read the source twice: once to hash it, once to send it), writes `marker` and waits forever.
UPLOADER = textwrap.dedent(
    """
    import io, sys, time
    from pathlib import Path
    from kvstore.node.archive.s3 import MIN_PART_BYTES, S3Store
    from kvstore.node.archive.store import open_store

    url, path, marker, stall_after = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])

    class Stalling(io.FileIO):
        read_so_far = 0

        def read(self, size=-1):
            if Stalling.read_so_far >= stall_after:
                marker.write_text("stalled")
                time.sleep(3600)
            data = super().read(size if size >= 0 else stall_after)
            Stalling.read_so_far += len(data)
            return data

    store = open_store(url)
    if isinstance(store, S3Store):
        store = S3Store(store.bucket, store.prefix, part_bytes=MIN_PART_BYTES)
    store.put("snapshots/big/snapshot.chk", Stalling(path))
    """
)


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.mark.parametrize("kind", ["file", "seaweedfs"])
def test_an_upload_killed_half_way_leaves_no_object(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = dict(os.environ)
    if kind == "file":
        url = f"file://{tmp_path / 'store'}"
        stall_after = SIZE // 2  # the copy into .incoming/ is the one read
    else:
        server: S3Server = request.getfixturevalue("weed")
        url = f"s3://{server.bucket}/killed"
        env.update(server.env)
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        stall_after = SIZE + 2 * MIN_PART_BYTES  # hashed whole, then two parts sent
    source = tmp_path / "snapshot.chk"
    source.write_bytes(os.urandom(SIZE))
    marker = tmp_path / "stalled"
    uploader = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, url, str(source), str(marker), str(stall_after)],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: marker.exists() or uploader.poll() is not None, 120, "the upload to stall")
        assert uploader.poll() is None, "the uploader ended before it was killed"
        uploader.kill()
        uploader.wait(30)
    finally:
        if uploader.poll() is None:
            uploader.kill()
    store: ObjectStore = open_store(url)
    assert store.list("snapshots/") == []
    with pytest.raises(ObjectMissing):
        store.get("snapshots/big/snapshot.chk", tmp_path / "download")
    # The name is still free: the next upload of it succeeds, whole.
    if isinstance(store, S3Store):
        store = S3Store(store.bucket, store.prefix, part_bytes=MIN_PART_BYTES)
    digest = store.put("snapshots/big/snapshot.chk", source.read_bytes())
    assert store.get("snapshots/big/snapshot.chk", tmp_path / "download") == digest
    assert hashlib.sha256((tmp_path / "download").read_bytes()).hexdigest() == digest
