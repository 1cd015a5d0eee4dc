"""deploy/: install.sh into a temporary root, the installed units checked by systemd's own
tools (Debian's systemd package, `make system-deps`): `systemd-analyze verify` with ExecStart
pointed at this checkout's kvstored, and `systemd-analyze security` at an exposure of 2.0 or less."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KVSTORED = Path(sys.executable).parent / "kvstored"
EXPOSURE_MAX = 2.0
UNITS = ("kvstore-plus-plus.service", "kvstore-plus-plus@.service")


def _run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=120, check=False)


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is not installed (Debian/Ubuntu: `apt-get install systemd`, `make system-deps`)")
    return tool


def _install(root: Path) -> subprocess.CompletedProcess[str]:
    done = _run("sh", DEPLOY / "install.sh", "--root", root, "--kvstored", KVSTORED)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _checkable(root: Path, unit: str, tmp_path: Path) -> Path:
    """The installed unit as systemd-analyze can load it: a template as its instance `r1`."""
    installed = root / "etc" / "systemd" / "system" / unit
    if "@." not in unit:
        return installed
    instance = tmp_path / "check" / unit.replace("@.", "@r1.")
    instance.parent.mkdir(exist_ok=True)
    shutil.copy(installed, instance)
    return instance


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    _install(root)
    return root


def test_install_writes_config_secrets_file_and_units_pointed_at_kvstored(root: Path) -> None:
    etc = root / "etc" / "kvstore-plus-plus"
    assert (etc / "config.toml").read_text() == (DEPLOY / "config.toml").read_text()
    assert stat.S_IMODE((etc / "kvstore.env").stat().st_mode) == 0o600
    for unit in UNITS:
        text = (root / "etc" / "systemd" / "system" / unit).read_text()
        assert re.search(rf"^ExecStart={re.escape(str(KVSTORED))} --data-dir ", text, re.MULTILINE), text


def test_install_again_keeps_the_operators_config_and_secrets(root: Path) -> None:
    etc = root / "etc" / "kvstore-plus-plus"
    (etc / "config.toml").write_text('listen = "0.0.0.0:9000"\n')
    (etc / "kvstore.env").write_text("KVSTORE_CLUSTER_KEY=" + "ab" * 32 + "\n")
    (etc / "kvstore.env").chmod(0o644)  # loosened by hand: the install tightens it again
    _install(root)
    assert (etc / "config.toml").read_text() == 'listen = "0.0.0.0:9000"\n'
    assert (etc / "kvstore.env").read_text() == "KVSTORE_CLUSTER_KEY=" + "ab" * 32 + "\n"
    assert stat.S_IMODE((etc / "kvstore.env").stat().st_mode) == 0o600


def test_install_refuses_a_kvstored_that_is_not_there(tmp_path: Path) -> None:
    done = _run("sh", DEPLOY / "install.sh", "--root", tmp_path / "root", "--kvstored", tmp_path / "nothing")
    assert done.returncode == 1
    assert "is not an executable file" in done.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verifies_the_installed_unit(root: Path, unit: str, tmp_path: Path) -> None:
    done = _run(_systemd_analyze(), "verify", "--recursive-errors=yes", _checkable(root, unit, tmp_path))
    assert done.returncode == 0 and not done.stderr.strip(), done.stdout + done.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_the_units_exposure_is_at_most_2(root: Path, unit: str, tmp_path: Path) -> None:
    done = _run(_systemd_analyze(), "security", "--offline=yes", _checkable(root, unit, tmp_path))
    report = done.stdout + done.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", report)
    assert match is not None, report
    assert float(match.group(1)) <= EXPOSURE_MAX, report
