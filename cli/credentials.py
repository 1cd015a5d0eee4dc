"""Which server kvctl talks to and with which token: the login file and the precedence.

Flags win, then the environment (`KVCTL_URL`, `KVCTL_TOKEN`), then the login file
(`$KVCTL_CONFIG` or `~/.config/kvctl/config.json`), then the default URL. The login
file's token also goes to a URL given by `--url` or `KVCTL_URL`, as kubectl's
`--server` keeps the current context's credentials: one token is valid on every node of
a cluster. When another node refuses it, the 401 names both URLs. The file is written
like any durable file here (temp file, fsync, rename, fsync the directory) and readable
by its owner only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from kvstore.node.fsutil import atomic_write

from .client import KvctlError

DEFAULT_URL = "http://127.0.0.1:8080"
CONFIG_ENV = "KVCTL_CONFIG"
URL_ENV = "KVCTL_URL"
TOKEN_ENV = "KVCTL_TOKEN"
CONFIG_DIR_MODE = 0o700
CONFIG_FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class Login:
    """What `kvctl login` stores; `expires_at` is as the server sent it (epoch seconds)."""

    url: str
    token: str
    user: str
    expires_at: int | str | None


@dataclass(frozen=True, slots=True)
class Target:
    """The resolved server and token (None: send none); `hint` says how to fix a 401."""

    url: str
    token: str | None
    hint: str


def config_path(environ: Mapping[str, str]) -> Path:
    configured = environ.get(CONFIG_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".config" / "kvctl" / "config.json"


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise KvctlError(f"server URL must start with http:// or https://, got {url!r}")
    return url


def load_login(path: Path) -> Login | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KvctlError(f"cannot read login file {path}: {exc.strerror}") from None
    try:
        document = json.loads(text)
        return Login(str(document["url"]), str(document["token"]), str(document["user"]), document.get("expires_at"))
    except (ValueError, KeyError, TypeError):
        raise KvctlError(f"login file {path} is damaged; run kvctl login again") from None


def save_login(path: Path, login: Login) -> None:
    path.parent.mkdir(mode=CONFIG_DIR_MODE, parents=True, exist_ok=True)
    atomic_write(path, json.dumps(asdict(login), indent=2).encode("utf-8") + b"\n", CONFIG_FILE_MODE)


def resolve(url_flag: str | None, token_flag: str | None, environ: Mapping[str, str], login: Login | None) -> Target:
    """Apply the precedence: flag, then environment, then login file, then default."""
    url = normalize_url(url_flag or environ.get(URL_ENV) or (login.url if login else DEFAULT_URL))
    if token_flag:
        return Target(url, token_flag, "check --token")
    if environ.get(TOKEN_ENV):
        return Target(url, environ[TOKEN_ENV], f"check ${TOKEN_ENV}")
    login_hint = f"run kvctl login --url {url}"
    if login is None:
        return Target(url, None, f"not logged in; {login_hint} or set ${TOKEN_ENV}")
    if isinstance(login.expires_at, int) and login.expires_at <= time.time():
        return Target(url, None, f"the login expired at {describe_expiry(login.expires_at)}; {login_hint}")
    issued_by = normalize_url(login.url)
    if issued_by != url:
        refused = f"the login file's token is for {issued_by} and was refused by {url}"
        return Target(url, login.token, f"{refused}; log in there with kvctl login --url {url}")
    return Target(url, login.token, login_hint)


def describe_expiry(expires_at: int | str | None) -> str:
    if isinstance(expires_at, int):
        return datetime.fromtimestamp(expires_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return str(expires_at) if expires_at is not None else "never"
