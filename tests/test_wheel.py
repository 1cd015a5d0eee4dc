"""The shipped wheel holds what runs in production and nothing else: no benchmark code, no
benchmark results. Built from a copy of the sources, so a stale build/ in the checkout
neither hides nor causes a failure, with the venv's setuptools and no network."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Local state of a checkout that a build must not see (compose/cluster.sh builds from a
# checkout after `rm -rf build` for the same reason).
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".typecheck", "run-data", "wheelhouse"
)
SHIPPED = (
    "kvstore/node/server.py",
    "kvstore/node/wal/writer.py",
    "kvstore/node/api/app.py",
    "kvstore/replication/primary.py",
    "kvstore/cli/kvstored.py",
    "kvstore/cli/kvctl.py",
)


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation"]
        + ["--wheel-dir", str(work / "dist"), str(source)],
        check=True,
        timeout=120,
    )
    (wheel,) = (work / "dist").glob("kvstore_plus_plus-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_the_node_and_its_commands(wheel_files: list[str]) -> None:
    assert [name for name in SHIPPED if name not in wheel_files] == []


def test_the_wheel_holds_no_benchmark(wheel_files: list[str]) -> None:
    benchmarks = [name for name in wheel_files if any("bench" in part or "bakeoff" in part for part in name.split("/"))]
    assert benchmarks == []


def test_the_wheel_holds_no_results_file(wheel_files: list[str]) -> None:
    assert [name for name in wheel_files if "RESULTS" in name] == []
