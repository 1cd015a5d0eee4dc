"""Node settings (node/config.py): defaults < config.toml < KVSTORE_* environment < flags,
merged by `load_settings` from what it is handed. In process: no node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kvstore.node.config import ConfigError, Settings, load_settings
from kvstore.node.wal.policy import FsyncPolicy


def write_config(data_dir: Path, text: str) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "config.toml"
    path.write_text(text)
    return path


def load(data_dir: Path, environ: dict[str, str] | None = None, **flags: Any) -> Settings:
    return load_settings({"data_dir": data_dir, **flags}, environ or {})


def test_nothing_given_is_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path) == Settings(data_dir=tmp_path)


def test_each_source_overrides_the_one_before(tmp_path: Path) -> None:
    write_config(tmp_path, 'snapshots_keep = 3\nfsync = "interval"\nlisten = "127.0.0.1:7000"\nmax_key_bytes = 100\n')
    environ = {"KVSTORE_FSYNC": "off", "KVSTORE_LISTEN": "127.0.0.1:7001", "KVSTORE_MAX_KEY_BYTES": "200"}
    settings = load(tmp_path, environ, max_key_bytes=300)
    assert settings.checkpoint_interval_s == Settings.checkpoint_interval_s  # default: no source names it
    assert settings.snapshots_keep == 3  # the file
    assert settings.fsync is FsyncPolicy.OFF  # the environment over the file
    assert settings.listen == "127.0.0.1:7001"
    assert settings.max_key_bytes == 300  # the flag over both


def test_a_flag_left_unset_or_an_empty_variable_overrides_nothing(tmp_path: Path) -> None:
    write_config(tmp_path, "snapshots_keep = 5\n")
    settings = load(tmp_path, {"KVSTORE_SNAPSHOTS_KEEP": ""}, fsync=None)
    assert settings.snapshots_keep == 5 and settings.fsync is FsyncPolicy.ALWAYS


def test_the_config_file_is_the_data_directorys_from_flag_or_environment(tmp_path: Path) -> None:
    flagged, environment = tmp_path / "flagged", tmp_path / "environment"
    write_config(flagged, "snapshots_keep = 4\n")
    write_config(environment, "snapshots_keep = 6\n")
    environ = {"KVSTORE_DATA_DIR": str(environment)}
    from_flag = load_settings({"data_dir": flagged}, environ)
    assert (from_flag.data_dir, from_flag.snapshots_keep) == (flagged, 4)
    from_environment = load_settings({}, environ)
    assert (from_environment.data_dir, from_environment.snapshots_keep) == (environment, 6)
    elsewhere = write_config(tmp_path / "etc", "snapshots_keep = 7\n")
    assert load_settings({"data_dir": flagged}, {}, config_path=elsewhere).snapshots_keep == 7


def test_values_are_converted_to_each_settings_type(tmp_path: Path) -> None:
    environ = {"KVSTORE_CHECKPOINT_INTERVAL_S": "2.5", "KVSTORE_FSYNC": "INTERVAL", "KVSTORE_MAX_TXN_OPS": "7"}
    settings = load(tmp_path, environ)
    assert settings.checkpoint_interval_s == 2.5 and settings.fsync is FsyncPolicy.INTERVAL
    assert settings.max_txn_ops == 7


def test_secrets_come_from_the_environment_never_from_the_file(tmp_path: Path) -> None:
    assert load(tmp_path, {"KVSTORE_ADMIN_PASSWORD": "from-env"}).admin_password == "from-env"
    path = write_config(tmp_path, 'admin_password = "in-a-file"\n')
    with pytest.raises(ConfigError, match=f"{path}: unknown setting 'admin_password'"):
        load(tmp_path)


@pytest.mark.parametrize(
    ("config_text", "environ", "message"),
    [
        ("no_such_setting = 1\n", {}, "unknown setting 'no_such_setting'"),
        ("snapshots_keep = \n", {}, "config.toml: "),  # not TOML
        ("", {"KVSTORE_FSYNC": "sometimes"}, "fsync: 'sometimes' is not a valid value (one of: always, interval, off)"),
        ("", {"KVSTORE_SNAPSHOTS_KEEP": "two"}, "snapshots_keep: 'two' is not a valid value"),
        ("snapshots_keep = 0\n", {}, "snapshots_keep: 0 is below the minimum 1"),
        ("", {"KVSTORE_LISTEN": "8080"}, "listen: '8080' is not HOST:PORT"),
    ],
)
def test_a_bad_setting_is_refused_by_name(
    tmp_path: Path, config_text: str, environ: dict[str, str], message: str
) -> None:
    write_config(tmp_path, config_text)
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, environ)
    assert message in str(refused.value)


def test_a_valid_flag_repairs_a_bad_file_value(tmp_path: Path) -> None:
    write_config(tmp_path, "snapshots_keep = 0\n")  # below the minimum, but a flag decides
    assert load(tmp_path, snapshots_keep=2).snapshots_keep == 2
