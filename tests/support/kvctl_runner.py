"""Running `kvctl` as a real subprocess in tests, with its own login file and environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.harness import ADMIN_PASSWORD, NodeProcess

KVCTL = [sys.executable, "-c", "from kvstore.cli.kvctl import main; main()"]
KVCTL_TIMEOUT_S = 60.0


def kvctl_env(config: Path, extra: dict[str, str] | None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("KVCTL_")}
    return {**env, "KVCTL_CONFIG": str(config), **(extra or {})}


def kvctl(
    *args: str, config: Path, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVCTL, *args],
        env=kvctl_env(config, env),
        input=stdin.decode("latin-1") if stdin is not None else None,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        encoding="latin-1",
        timeout=KVCTL_TIMEOUT_S,
    )


def spawn_kvctl(*args: str, config: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a long-running kvctl (stdout and stderr piped) as `make test &` starts everything: with
    SIGINT ignored, which a non-interactive shell gives its background jobs and every child inherits."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.Popen(
            [*KVCTL, *args],
            env=kvctl_env(config, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"kvctl failed ({result.returncode}): {result.stderr}"
    return result.stdout


def kvctl_json(*args: str, config: Path, env: dict[str, str] | None = None) -> Any:
    """Run a command with `--format json` and parse what it printed."""
    return json.loads(ok(kvctl(*args, "--format", "json", config=config, env=env)))


def fails(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one-line reason of a failed command."""
    assert result.returncode == code, f"expected exit {code}, got {result.returncode}: {result.stdout}{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvctl: "), result.stderr
    return lines[0]


def fails_json(result: subprocess.CompletedProcess[str], code: int = 1) -> dict[str, str]:
    """The `{"code", "message"}` of a command that failed with `--format json`: stderr is one JSON document."""
    assert result.returncode == code, f"expected exit {code}, got {result.returncode}: {result.stdout}{result.stderr}"
    assert result.stdout == "", result.stdout
    document = json.loads(result.stderr)
    assert document.keys() == {"error"} and document["error"].keys() == {"code", "message"}, document
    return dict(document["error"])


def kvctl_login(
    node: NodeProcess, config: Path, user: str = "admin", password: str = ADMIN_PASSWORD
) -> subprocess.CompletedProcess[str]:
    """`kvctl login` to `node` as `user`, the password a line on stdin; the token goes to `config`."""
    stdin = f"{password}\n".encode()
    return kvctl("login", "--url", node.url, "--user", user, "--password-stdin", config=config, stdin=stdin)


def as_env(node: NodeProcess) -> dict[str, str]:
    return {"KVCTL_URL": node.url, "KVCTL_TOKEN": node.token()}
