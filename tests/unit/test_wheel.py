"""The shipped wheel holds what runs in production and nothing else: no benchmark code, no
benchmark results. Built from a copy of the sources (so a stale build/ in the checkout
neither hides nor causes a failure) with the venv's setuptools and no network."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Only what a build reads: a checkout's local state (build/, compose/kvstore.env's secrets, run
# data) stays out. bench/ goes in, to show that the package configuration leaves it out.
PACKAGE_DIRS = {
    path.split("/")[0]
    for path in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
}
BUILD_INPUTS = ("pyproject.toml", "README.md", *sorted(PACKAGE_DIRS | {"bench"}))
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
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
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
