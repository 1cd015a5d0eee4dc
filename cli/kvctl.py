"""`kvctl`: the operator's command line for a KVStore++ node.

This module owns the commands and their options; the HTTP client (client.py), the
login file and server resolution (credentials.py), printing (output.py) and WAL
records (walview.py) live beside it. Every command prints a table for people or,
with `--format json`, JSON for scripts. Any failure prints `kvctl: <reason>` on
stderr and exits 1; bad usage exits 2 (typer's usage errors).

`--url`, `--token` and `--format` may be given before the command (`kvctl --format
json status`) or after it (`kvctl status --format json`); after wins.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any

import typer

from kvstore.node.wal.format import format_lsn, parse_lsn

from . import walview
from .client import KvClient, KvctlError
from .credentials import Login, Target, config_path, describe_expiry, load_login, resolve, save_login
from .output import OutputFormat, emit_bytes, emit_fields, emit_json, emit_line, emit_table, json_text, utc_text

EXIT_FAILURE = 1
KEYS_LIMIT_DEFAULT = 1000
KEYS_PAGE_DEFAULT = 1000
GLOB_CHARS = "*?["
DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION_TEXT = re.compile(r"(?:\d+[smhdw])+")
DURATION_PART = re.compile(r"(\d+)([smhdw])")
APIKEY_TOKEN_WARNING = "kvctl: save this token now; it will not be shown again"


def _lsn(text: str) -> int:
    try:
        return parse_lsn(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Node URL. Default: $KVCTL_URL, then the login file, then http://127.0.0.1:8080."),
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Bearer token or API key. Default: $KVCTL_TOKEN, then the login file.")
]
FormatOption = Annotated[
    OutputFormat | None, typer.Option("--format", help="table (for people) or json (for scripts).")
]
DataDirOption = Annotated[
    Path, typer.Option("--data-dir", help="Data directory of a node (read only; the node may be stopped).")
]
LsnOption = Annotated[int | None, typer.Option("--from", metavar="LSN", parser=_lsn, help="Start LSN, as X/Y.")]
IfVersionOption = Annotated[
    int | None, typer.Option("--if-version", min=0, help="Only if the key is at this version (compare-and-set).")
]
PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin (for scripts).")
]
RolesOption = Annotated[list[str] | None, typer.Option("--role", help="Role names, comma-separated; may repeat.")]
RequiredRolesOption = Annotated[list[str], typer.Option("--role", help="Role names, comma-separated; may repeat.")]
UserOption = Annotated[str, typer.Option("--user", help="User name.")]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Operate a KVStore++ node: keys, checkpoints, snapshots, status, the WAL, users, roles and API keys.",
)
snapshot_app = typer.Typer(no_args_is_help=True, help="Create and list snapshots.")
wal_app = typer.Typer(no_args_is_help=True, help="Follow a node's WAL, or inspect and verify one offline.")
user_app = typer.Typer(no_args_is_help=True, help="Create, list, lock and delete users (superuser only).")
role_app = typer.Typer(no_args_is_help=True, help="Create, list and delete roles (superuser only).")
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(wal_app, name="wal")
app.add_typer(user_app, name="user")
apikey_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys (superuser only).")
app.add_typer(role_app, name="role")
app.add_typer(apikey_app, name="apikey")


@dataclass(frozen=True, slots=True)
class GlobalOptions:
    url: str | None
    token: str | None
    output: OutputFormat | None


def main() -> None:
    try:
        app(prog_name="kvctl")
    except KvctlError as error:
        print(f"kvctl: {error.message}", file=sys.stderr)
        sys.exit(EXIT_FAILURE)


@app.callback()
def root(ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None) -> None:
    ctx.obj = GlobalOptions(url, token, output)


def _output(ctx: typer.Context, output: OutputFormat | None) -> OutputFormat:
    return output or ctx.obj.output or OutputFormat.TABLE


def _target(ctx: typer.Context, url: str | None, token: str | None) -> Target:
    login = load_login(config_path(os.environ))
    return resolve(url or ctx.obj.url, token or ctx.obj.token, os.environ, login)


def _connect(ctx: typer.Context, url: str | None, token: str | None) -> KvClient:
    target = _target(ctx, url, token)
    return KvClient(target.url, target.token, unauthorized_hint=target.hint)


# -- login --------------------------------------------------------------------------------


@app.command()
def login(
    ctx: typer.Context,
    url: UrlOption = None,
    user: Annotated[str, typer.Option("--user", help="User name.")] = "admin",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
    output: FormatOption = None,
) -> None:
    """Log in and keep the token in the login file ($KVCTL_CONFIG or ~/.config/kvctl/config.json)."""
    path = config_path(os.environ)
    try:
        previous = load_login(path)
    except KvctlError:
        previous = None  # a damaged login file is about to be replaced
    target = resolve(url or ctx.obj.url, None, os.environ, previous)
    password = _read_password(password_stdin)
    with KvClient(target.url) as client:
        answer = client.login(user, password)
    save_login(path, Login(target.url, str(answer["token"]), user, answer.get("expires_at")))
    expires = describe_expiry(answer.get("expires_at"))
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json({"url": target.url, "user": user, "expires_at": expires, "config": str(path)})
    else:
        emit_line(f"logged in as {user} at {target.url} (token expires {expires})")


def _read_password(from_stdin: bool) -> str:
    if not from_stdin:
        return str(typer.prompt("Password", hide_input=True))
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise KvctlError("no password on stdin (--password-stdin reads its first line)")
    return password


# -- data -----------------------------------------------------------------------------


@app.command()
def get(
    ctx: typer.Context, key: str, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Print a key's value (raw bytes; json shows version and expiry too)."""
    with _connect(ctx, url, token) as client:
        value = client.get(key)
    if _output(ctx, output) is OutputFormat.TABLE:
        emit_bytes(value.data)
        return
    document: dict[str, Any] = {"key": value.key}
    try:
        document["value"] = value.data.decode("utf-8")
    except UnicodeDecodeError:
        document["value_base64"] = base64.b64encode(value.data).decode("ascii")
    emit_json({**document, "version": value.version, "expires_at": value.expires_at})


@app.command("set")
def set_value(
    ctx: typer.Context,
    key: str,
    value: Annotated[str, typer.Argument(help="The value, or - to read bytes from stdin.")],
    ttl: Annotated[int | None, typer.Option("--ttl", min=1, help="Expire after this many seconds.")] = None,
    if_version: IfVersionOption = None,
    create_only: Annotated[bool, typer.Option("--create-only", help="Fail if the key exists.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Set a key's value."""
    if if_version is not None and create_only:
        raise typer.BadParameter("--if-version and --create-only exclude each other")
    data = sys.stdin.buffer.read() if value == "-" else value.encode("utf-8")
    with _connect(ctx, url, token) as client:
        written = client.put(key, data, ttl, if_version, create_only)
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json(asdict(written))
    else:
        action = "created" if written.created else "updated"
        emit_line(f"{action} {key} version={written.version} commit_lsn={written.commit_lsn}")


@app.command("del")
def delete_key(
    ctx: typer.Context,
    key: str,
    if_version: IfVersionOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Delete a key (fails if it does not exist)."""
    with _connect(ctx, url, token) as client:
        commit_lsn = client.delete(key, if_version)
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json({"key": key, "deleted": True, "commit_lsn": commit_lsn})
    else:
        emit_line(f"deleted {key} commit_lsn={commit_lsn}")


@app.command()
def incr(
    ctx: typer.Context,
    key: str,
    by: Annotated[int, typer.Option("--by", help="Amount to add (may be negative).")] = 1,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Add to an integer value (a missing key counts as 0) and print the result."""
    with _connect(ctx, url, token) as client:
        answer = client.incr(key, by)
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json(answer)
    else:
        emit_line(str(answer["value"]))


@app.command()
def keys(
    ctx: typer.Context,
    pattern: Annotated[str | None, typer.Option("--pattern", help="Glob such as 'user:*' (fnmatch).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many keys.")] = KEYS_LIMIT_DEFAULT,
    page_size: Annotated[
        int, typer.Option("--page-size", min=1, help="Keys per request to the node.")
    ] = KEYS_PAGE_DEFAULT,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """List keys matching a pattern, in key order."""
    with _connect(ctx, url, token) as client:
        found, truncated = collect_keys(client, pattern, limit, page_size)
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json({"keys": found, "truncated": truncated})
        return
    rows = [(item["key"], item["version"], item["value_bytes"], item.get("expires_at")) for item in found]
    emit_table(("KEY", "VERSION", "BYTES", "EXPIRES"), rows)
    if truncated:
        print(f"kvctl: showing the first {limit} matching keys; raise --limit to see more", file=sys.stderr)


def glob_prefix(pattern: str) -> str:
    """The literal text before the first glob character: what the node can filter on."""
    cut = next((index for index, char in enumerate(pattern) if char in GLOB_CHARS), len(pattern))
    return pattern[:cut]


def collect_keys(
    client: KvClient, pattern: str | None, limit: int, page_size: int
) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` keys matching `pattern`, following the node's pages; and whether more match."""
    prefix = glob_prefix(pattern) if pattern is not None else ""
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = client.list_keys(prefix, after, page_size)
        for item in page.keys:
            if pattern is None or fnmatchcase(item["key"], pattern):
                if len(found) == limit:
                    return found, True
                found.append(item)
        if page.next_after is None:
            return found, False
        if after is not None and page.next_after <= after:
            raise KvctlError(f"node sent a page cursor that does not advance ({page.next_after!r})")
        after = page.next_after


# -- admin ------------------------------------------------------------------------------


@app.command()
def checkpoint(
    ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Run a checkpoint now: snapshot, control file, old WAL removed."""
    with _connect(ctx, url, token) as client:
        _emit_document(_output(ctx, output), client.checkpoint())


@snapshot_app.command("create")
def snapshot_create(
    ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Write a snapshot now (a checkpoint)."""
    with _connect(ctx, url, token) as client:
        _emit_document(_output(ctx, output), client.create_snapshot())


@snapshot_app.command("list")
def snapshot_list(
    ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """List the snapshots in the node's data directory."""
    with _connect(ctx, url, token) as client:
        snapshots = client.list_snapshots()
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json({"snapshots": snapshots})
    else:
        emit_table(("NAME", "BYTES", "CURRENT"), [(s["name"], s["bytes"], s["current"]) for s in snapshots])


@app.command()
def status(ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None) -> None:
    """Show the node's role, state, timeline, LSNs and last checkpoint."""
    with _connect(ctx, url, token) as client:
        document = client.status()
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json(document)
    else:
        emit_fields(status_fields(document))


def status_fields(document: dict[str, Any]) -> list[tuple[str, object]]:
    lsn = document.get("lsn") or {}
    state = document.get("state")
    if document.get("read_only_reason"):
        state = f"{state} ({document['read_only_reason']})"
    last = document.get("last_checkpoint")
    return [
        ("role", document.get("role")),
        ("state", state),
        ("timeline", document.get("timeline")),
        *((f"lsn.{name}", lsn.get(name)) for name in ("end", "flushed", "committed", "applied", "redo")),
        ("keys", document.get("keys")),
        ("fsync", document.get("fsync")),
        ("last_checkpoint", f"{last['snapshot']} (redo {last['redo_lsn']}, {last['seconds']} s)" if last else None),
        *(_replica_field(index, replica) for index, replica in enumerate(document.get("replicas") or [])),
    ]


def _replica_field(index: int, replica: dict[str, Any]) -> tuple[str, object]:
    """`replica.<name>  field=value ...`: whatever the node reports (lag, LSNs, state)."""
    name = replica.get("name", index)
    return f"replica.{name}", " ".join(f"{field}={value}" for field, value in replica.items() if field != "name")


def _emit_document(output: OutputFormat, document: dict[str, Any]) -> None:
    if output is OutputFormat.JSON:
        emit_json(document)
    else:
        emit_fields(document.items())


# -- users and roles ----------------------------------------------------------------------


def _valid_until(text: str) -> int:
    try:
        return parse_valid_until(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@user_app.command("create")
def user_create(
    ctx: typer.Context,
    name: str,
    password: Annotated[bool, typer.Option("--password", help="Prompt for the password (twice, not echoed).")] = False,
    password_stdin: PasswordStdinOption = False,
    role: RolesOption = None,
    valid_until: Annotated[
        int | None,
        typer.Option(
            "--valid-until",
            metavar="ISO-OR-EPOCH",
            parser=_valid_until,
            help="The password stops working at this time: epoch seconds or ISO 8601 (UTC unless it says).",
        ),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Create a user with a password and roles."""
    if password == password_stdin:
        raise typer.BadParameter("give exactly one of --password (prompt) and --password-stdin")
    roles = split_names(role or [])
    secret = _read_new_password(password_stdin)
    with _connect(ctx, url, token) as client:
        user = client.create_user(name, secret, roles, valid_until)
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json(user)
    else:
        emit_line(f"created user {user['name']} roles={_names_text(user.get('roles'))}")


@user_app.command("list")
def user_list(
    ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """List the users."""
    with _connect(ctx, url, token) as client:
        users = client.list_users()
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json({"users": users})
    else:
        emit_table(("NAME", "ROLES", "LOGIN", "LOCKED", "VALID_UNTIL"), [user_row(user) for user in users])


@user_app.command("show")
def user_show(
    ctx: typer.Context, name: str, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Show one user: roles, whether it can log in, lock reason, expiry."""
    with _connect(ctx, url, token) as client:
        _emit_user(_output(ctx, output), client.get_user(name))


@user_app.command("delete")
def user_delete(
    ctx: typer.Context, name: str, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Delete a user."""
    with _connect(ctx, url, token) as client:
        client.delete_user(name)
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json({"user": name, "deleted": True})
    else:
        emit_line(f"deleted user {name}")


@user_app.command("passwd")
def user_passwd(
    ctx: typer.Context,
    name: str,
    password_stdin: PasswordStdinOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Set a user's password (prompts twice, not echoed)."""
    secret = _read_new_password(password_stdin)
    with _connect(ctx, url, token) as client:
        client.set_password(name, secret)
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json({"user": name, "password_changed": True})
    else:
        emit_line(f"changed the password of {name}")


@user_app.command("lock")
def user_lock(
    ctx: typer.Context,
    name: str,
    reason: Annotated[str | None, typer.Option("--reason", help="Why; shown by `user show`.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Lock a user out: its logins fail until `user unlock`."""
    with _connect(ctx, url, token) as client:
        _emit_user(_output(ctx, output), client.lock_user(name, reason))


@user_app.command("unlock")
def user_unlock(
    ctx: typer.Context, name: str, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Let a locked user log in again."""
    with _connect(ctx, url, token) as client:
        _emit_user(_output(ctx, output), client.unlock_user(name))


@app.command("grant")
def grant_roles(
    ctx: typer.Context,
    user: UserOption,
    role: RequiredRolesOption,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Give a user roles."""
    _change_roles(ctx, user, split_names(role), [], url, token, output)


@app.command("revoke")
def revoke_roles(
    ctx: typer.Context,
    user: UserOption,
    role: RequiredRolesOption,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Take roles away from a user."""
    _change_roles(ctx, user, [], split_names(role), url, token, output)


def _change_roles(
    ctx: typer.Context,
    user: str,
    grant: list[str],
    revoke: list[str],
    url: str | None,
    token: str | None,
    output: OutputFormat | None,
) -> None:
    if not grant and not revoke:
        raise typer.BadParameter("--role names no role")
    with _connect(ctx, url, token) as client:
        document = client.change_roles(user, grant, revoke)
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json(document)
    elif grant:
        emit_line(f"granted {','.join(grant)} to {user}; roles={_names_text(document.get('roles'))}")
    else:
        emit_line(f"revoked {','.join(revoke)} from {user}; roles={_names_text(document.get('roles'))}")


@role_app.command("create")
def role_create(
    ctx: typer.Context,
    name: str,
    grant: Annotated[
        list[str] | None,
        typer.Option("--grant", metavar="ACTIONS:PATTERN", help="Such as 'read,write:app:*'; may repeat."),
    ] = None,
    superuser: Annotated[bool, typer.Option("--superuser", help="Members may do anything.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Create a role from grants of actions on key patterns."""
    grants = [_grant(text) for text in grant or []]
    with _connect(ctx, url, token) as client:
        role = client.create_role(name, grants, superuser)
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json(role)
    else:
        emit_line(f"created role {role['name']} grants={_grants_text(role.get('grants'))}")


def _grant(text: str) -> dict[str, Any]:
    try:
        return parse_grant(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@role_app.command("list")
def role_list(
    ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """List the roles, built-in ones included."""
    with _connect(ctx, url, token) as client:
        roles = client.list_roles()
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json({"roles": roles})
    else:
        rows = [(role["name"], bool(role.get("superuser")), _grants_text(role.get("grants"))) for role in roles]
        emit_table(("NAME", "SUPERUSER", "GRANTS"), rows)


@role_app.command("show")
def role_show(
    ctx: typer.Context, name: str, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Show one role and its grants (one `grant` line each)."""
    with _connect(ctx, url, token) as client:
        role = client.get_role(name)
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json(role)
    else:
        grants = [("grant", grant_text(grant)) for grant in role.get("grants") or []]
        emit_fields([("name", role["name"]), ("superuser", bool(role.get("superuser"))), *grants])


@role_app.command("delete")
def role_delete(
    ctx: typer.Context, name: str, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Delete a role (the built-in ones cannot be)."""
    with _connect(ctx, url, token) as client:
        client.delete_role(name)
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json({"role": name, "deleted": True})
    else:
        emit_line(f"deleted role {name}")


def _read_new_password(from_stdin: bool) -> str:
    """A new password: stdin's first line, or typed twice without echo."""
    if from_stdin:
        return _read_password(True)
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def _emit_user(output: OutputFormat, user: dict[str, Any]) -> None:
    if output is OutputFormat.JSON:
        emit_json(user)
    else:
        emit_fields(user_fields(user))


def split_names(values: Iterable[str]) -> list[str]:
    """`--role a,b --role c` as ["a", "b", "c"]: blanks dropped, duplicates once, order kept."""
    names = (name.strip() for value in values for name in value.split(","))
    return list(dict.fromkeys(name for name in names if name))


def parse_grant(text: str) -> dict[str, Any]:
    """`read,write:app:*` as {"actions": ["read", "write"], "pattern": "app:*"}: the pattern is
    everything after the first colon. The node judges the action names."""
    actions, colon, pattern = text.partition(":")
    if not colon or not pattern:
        raise ValueError(f"grant {text!r} is not ACTIONS:PATTERN (such as 'read,write:app:*')")
    names = split_names([actions])
    if not names:
        raise ValueError(f"grant {text!r} names no action")
    return {"actions": names, "pattern": pattern}


def grant_text(grant: dict[str, Any]) -> str:
    """A grant back in --grant's form."""
    return f"{','.join(grant.get('actions') or [])}:{grant.get('pattern')}"


def parse_valid_until(text: str) -> int:
    """Epoch seconds, or ISO 8601 (a date, or a time; UTC unless an offset is given)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither epoch seconds nor an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def user_row(user: dict[str, Any]) -> tuple[object, ...]:
    """NAME ROLES LOGIN LOCKED VALID_UNTIL."""
    valid_until = user.get("valid_until")
    return (
        user["name"],
        _names_text(user.get("roles")),
        bool(user.get("can_login")),
        user.get("locked_reason") is not None,
        utc_text(valid_until) if valid_until is not None else "never",
    )


def user_fields(user: dict[str, Any]) -> list[tuple[str, object]]:
    created_ms = user.get("created_at_ms")
    valid_until = user.get("valid_until")
    return [
        ("name", user["name"]),
        ("roles", _names_text(user.get("roles"))),
        ("can_login", bool(user.get("can_login"))),
        ("locked", user.get("locked_reason") is not None),
        ("locked_reason", user.get("locked_reason")),
        ("valid_until", utc_text(valid_until) if valid_until is not None else "never"),
        ("created_at", utc_text(created_ms / 1000) if created_ms is not None else None),
    ]


def _names_text(names: list[str] | None) -> str:
    return ",".join(names) if names else "-"


def _grants_text(grants: list[dict[str, Any]] | None) -> str:
    return " ".join(grant_text(grant) for grant in grants) if grants else "-"


# -- API keys ------------------------------------------------------------------------------


def _expires(text: str) -> int:
    try:
        return parse_expires(text, time.time())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _cidr(text: str) -> str:
    try:
        return parse_cidr(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@apikey_app.command("create")
def apikey_create(
    ctx: typer.Context,
    name: str,
    user: UserOption,
    cidr: Annotated[
        list[str] | None,
        typer.Option("--cidr", metavar="CIDR", parser=_cidr, help="Accept the key only from this network; may repeat."),
    ] = None,
    expires: Annotated[
        int | None,
        typer.Option(
            "--expires",
            metavar="WHEN",
            parser=_expires,
            help="The key stops working: epoch seconds, ISO 8601 (UTC unless it says), or a duration (30d, 12h).",
        ),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Create an API key for a user and print its token (shown this once only)."""
    with _connect(ctx, url, token) as client:
        key = client.create_apikey(name, user, list(dict.fromkeys(cidr or [])), expires)
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json(key)
        return
    emit_line(f"created API key {key['name']} for {key['user']} (id {key['id']}, expires {_expires_text(key)})")
    emit_line(str(key["token"]))
    print(APIKEY_TOKEN_WARNING, file=sys.stderr, flush=True)


@apikey_app.command("list")
def apikey_list(
    ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """List the API keys (never their tokens)."""
    with _connect(ctx, url, token) as client:
        keys = client.list_apikeys()
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json({"apikeys": keys})
    else:
        emit_table(("NAME", "ID", "USER", "CIDRS", "EXPIRES", "LAST_USED"), [apikey_row(key) for key in keys])


@apikey_app.command("revoke")
def apikey_revoke(
    ctx: typer.Context, name: str, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Revoke an API key: its token is refused from now on."""
    with _connect(ctx, url, token) as client:
        client.revoke_apikey(name)
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json({"apikey": name, "revoked": True})
    else:
        emit_line(f"revoked API key {name}")


def parse_duration(text: str) -> int:
    """`30d`, `12h`, `1h30m`: whole units of s, m, h, d or w, as seconds (more than 0)."""
    text = text.strip().lower()
    if not DURATION_TEXT.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration such as 30d or 12h")
    seconds = sum(int(number) * DURATION_UNITS_S[unit] for number, unit in DURATION_PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"duration {text!r} is not longer than 0")
    return seconds


def parse_expires(text: str, now: float) -> int:
    """Epoch seconds, ISO 8601 (as --valid-until), or a duration from `now` (30d, 12h)."""
    text = text.strip()
    if DURATION_TEXT.fullmatch(text.lower()):
        return int(now) + parse_duration(text)
    try:
        return parse_valid_until(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither epoch seconds, an ISO 8601 time nor a duration such as 30d") from None


def parse_cidr(text: str) -> str:
    """A network such as 10.0.0.0/8 or fd00::/8 (a bare address means just it), as given."""
    text = text.strip()
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not a CIDR such as 10.0.0.0/8") from None
    return text


def apikey_row(key: dict[str, Any]) -> tuple[object, ...]:
    """NAME ID USER CIDRS EXPIRES LAST_USED."""
    return (
        key["name"],
        key.get("id"),
        key.get("user"),
        _names_text(key.get("cidrs")),
        _expires_text(key),
        utc_text(key.get("last_used_at")) if key.get("last_used_at") is not None else "never",
    )


def _expires_text(key: dict[str, Any]) -> str:
    expires_at = key.get("expires_at")
    return str(utc_text(expires_at)) if expires_at is not None else "never"


# -- WAL --------------------------------------------------------------------------------


@wal_app.command("tail")
def wal_tail(
    ctx: typer.Context,
    from_lsn: LsnOption = None,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Keep printing new records.")] = True,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Print WAL records as the node commits them (default: from now on). Ctrl-C stops."""
    as_json = _output(ctx, output) is OutputFormat.JSON
    start = format_lsn(from_lsn) if from_lsn is not None else None
    try:
        with _connect(ctx, url, token) as client:
            for line in client.wal_records(start, follow):
                emit_line(line.text if as_json else walview.tail_line(line.record))
    except KeyboardInterrupt:
        return


@wal_app.command("inspect")
def wal_inspect(
    ctx: typer.Context,
    data_dir: DataDirOption,
    from_lsn: LsnOption = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Show at most this many records.")] = None,
    output: FormatOption = None,
) -> None:
    """List the WAL records in a data directory, like pg_waldump."""
    scan = walview.open_scan(data_dir, from_lsn)
    found = walview.read_records(scan, from_lsn, limit)
    if _output(ctx, output) is OutputFormat.JSON:
        _emit_records_json(found)
        end = format_lsn(scan.end_lsn) if scan.end_lsn is not None else None
        torn = walview.torn_tail_document(scan.torn_tail) if scan.torn_tail else None
        emit_line(f'], "end_lsn": {json_text(end)}, "torn_tail": {json_text(torn)}}}')
        return
    emit_line(walview.inspect_header())
    for record in found:
        for text in walview.inspect_lines(record):
            emit_line(text)
    if scan.end_lsn is not None:
        emit_line(f"end of WAL at {format_lsn(scan.end_lsn)}")
    if scan.torn_tail is not None:
        emit_line(walview.describe_torn_tail(scan.torn_tail))


def _emit_records_json(found: Iterator[dict[str, Any]]) -> None:
    """Open `{"records": [` and stream one record a line, so a long WAL is never held in memory."""
    emit_line('{"records": [')
    for index, record in enumerate(found):
        emit_line(("," if index else "") + json_text(record))


@wal_app.command("verify")
def wal_verify(ctx: typer.Context, data_dir: DataDirOption, output: FormatOption = None) -> None:
    """Check every WAL segment of a data directory; exit 1 on corruption."""
    found = walview.verify(data_dir)
    first = format_lsn(found.first_lsn if found.first_lsn is not None else found.end_lsn)
    if _output(ctx, output) is OutputFormat.JSON:
        emit_json(
            {
                "ok": True,
                "records": found.records,
                "first_lsn": first,
                "end_lsn": format_lsn(found.end_lsn),
                "segments": found.segments,
                "torn_tail": walview.torn_tail_document(found.torn_tail) if found.torn_tail else None,
            }
        )
        return
    plural = "" if found.segments == 1 else "s"
    text = (
        f"WAL OK: {found.records} records, LSN {first}..{format_lsn(found.end_lsn)}, {found.segments} segment{plural}"
    )
    emit_line(f"{text}; {walview.describe_torn_tail(found.torn_tail)}" if found.torn_tail else text)
