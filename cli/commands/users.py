"""Users and roles (superuser only): `user ...`, `role ...`, and `grant`/`revoke` of roles
to a user; with the parsing and describing of names, grants and expiry times."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from ..output import OutputFormat, emit_fields, emit_json, emit_line, emit_table, utc_text
from .login import read_password
from .options import FormatOption, TokenOption, UrlOption, UserOption, connect, output_format

PasswordStdinOption = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of stdin, for scripts (done anyway when stdin is not a terminal).",
    ),
]
RolesOption = Annotated[list[str] | None, typer.Option("--role", help="Role names, comma-separated; may repeat.")]
RequiredRolesOption = Annotated[list[str], typer.Option("--role", help="Role names, comma-separated; may repeat.")]

app = typer.Typer()  # added to kvctl without a name: its commands are top-level ones
user_app = typer.Typer(no_args_is_help=True, help="Create, list, lock and delete users (superuser only).")
role_app = typer.Typer(no_args_is_help=True, help="Create, list and delete roles (superuser only).")


def _valid_until(text: str) -> int:
    try:
        return parse_valid_until(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@user_app.command("create")
def user_create(
    ctx: typer.Context,
    name: str,
    password: Annotated[
        bool,
        typer.Option(
            "--password",
            help="Prompt for the password (twice, not echoed); when stdin is not a terminal, read its first line.",
        ),
    ] = False,
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
    secret = read_password(password_stdin, confirm=True)
    with connect(ctx, url, token) as client:
        user = client.create_user(name, secret, roles, valid_until)
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(user)
    else:
        emit_line(f"created user {user['name']} roles={names_text(user.get('roles'))}")


@user_app.command("list")
def user_list(
    ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """List the users."""
    with connect(ctx, url, token) as client:
        users = client.list_users()
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json({"users": users})
    else:
        emit_table(("NAME", "ROLES", "LOGIN", "LOCKED", "VALID_UNTIL"), [user_row(user) for user in users])


@user_app.command("show")
def user_show(
    ctx: typer.Context, name: str, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Show one user: roles, whether it can log in, lock reason, expiry."""
    with connect(ctx, url, token) as client:
        _emit_user(output_format(ctx, output), client.get_user(name))


@user_app.command("delete")
def user_delete(
    ctx: typer.Context, name: str, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Delete a user."""
    with connect(ctx, url, token) as client:
        client.delete_user(name)
    if output_format(ctx, output) is OutputFormat.JSON:
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
    secret = read_password(password_stdin, confirm=True)
    with connect(ctx, url, token) as client:
        client.set_password(name, secret)
    if output_format(ctx, output) is OutputFormat.JSON:
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
    with connect(ctx, url, token) as client:
        _emit_user(output_format(ctx, output), client.lock_user(name, reason))


@user_app.command("unlock")
def user_unlock(
    ctx: typer.Context, name: str, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Let a locked user log in again."""
    with connect(ctx, url, token) as client:
        _emit_user(output_format(ctx, output), client.unlock_user(name))


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
    with connect(ctx, url, token) as client:
        document = client.change_roles(user, grant, revoke)
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(document)
    elif grant:
        emit_line(f"granted {','.join(grant)} to {user}; roles={names_text(document.get('roles'))}")
    else:
        emit_line(f"revoked {','.join(revoke)} from {user}; roles={names_text(document.get('roles'))}")


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
    with connect(ctx, url, token) as client:
        role = client.create_role(name, grants, superuser)
    if output_format(ctx, output) is OutputFormat.JSON:
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
    with connect(ctx, url, token) as client:
        roles = client.list_roles()
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json({"roles": roles})
    else:
        rows = [(role["name"], bool(role.get("superuser")), _grants_text(role.get("grants"))) for role in roles]
        emit_table(("NAME", "SUPERUSER", "GRANTS"), rows)


@role_app.command("show")
def role_show(
    ctx: typer.Context, name: str, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Show one role and its grants (one `grant` line each)."""
    with connect(ctx, url, token) as client:
        role = client.get_role(name)
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(role)
    else:
        grants = [("grant", grant_text(grant)) for grant in role.get("grants") or []]
        emit_fields([("name", role["name"]), ("superuser", bool(role.get("superuser"))), *grants])


ActionsOption = Annotated[
    str, typer.Option("--actions", help="Comma-separated: read, write, delete, admin, replication.")
]
PatternOption = Annotated[str, typer.Option("--pattern", help="Key pattern, such as 'app:*'.")]


@role_app.command("grant")
def role_grant(
    ctx: typer.Context,
    name: str,
    actions: ActionsOption,
    pattern: PatternOption,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Let a role's holders do ACTIONS on keys matching PATTERN, from their next request on."""
    _alter_role(ctx, name, {"grant": [_actions_on(actions, pattern)], "revoke": []}, url, token, output)


@role_app.command("revoke")
def role_revoke(
    ctx: typer.Context,
    name: str,
    actions: ActionsOption,
    pattern: PatternOption,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Take ACTIONS on PATTERN away from a role; its holders lose them on their next request."""
    _alter_role(ctx, name, {"grant": [], "revoke": [_actions_on(actions, pattern)]}, url, token, output)


def _actions_on(actions: str, pattern: str) -> dict[str, Any]:
    names = split_names([actions])
    if not names:
        raise typer.BadParameter("name at least one action", param_hint="--actions")
    return {"actions": names, "pattern": pattern}


def _alter_role(
    ctx: typer.Context,
    name: str,
    change: dict[str, list[dict[str, Any]]],
    url: str | None,
    token: str | None,
    output: OutputFormat | None,
) -> None:
    with connect(ctx, url, token) as client:
        role = client.alter_role(name, change["grant"], change["revoke"])
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(role)
    else:
        emit_line(f"altered role {role['name']} grants={_grants_text(role.get('grants'))}")


@role_app.command("delete")
def role_delete(
    ctx: typer.Context, name: str, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Delete a role (the built-in ones cannot be)."""
    with connect(ctx, url, token) as client:
        client.delete_role(name)
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json({"role": name, "deleted": True})
    else:
        emit_line(f"deleted role {name}")


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
        names_text(user.get("roles")),
        bool(user.get("can_login")),
        user.get("locked_reason") is not None,
        utc_text(valid_until) if valid_until is not None else "never",
    )


def user_fields(user: dict[str, Any]) -> list[tuple[str, object]]:
    created_ms = user.get("created_at_ms")
    valid_until = user.get("valid_until")
    return [
        ("name", user["name"]),
        ("roles", names_text(user.get("roles"))),
        ("can_login", bool(user.get("can_login"))),
        ("locked", user.get("locked_reason") is not None),
        ("locked_reason", user.get("locked_reason")),
        ("valid_until", utc_text(valid_until) if valid_until is not None else "never"),
        ("created_at", utc_text(created_ms / 1000) if created_ms is not None else None),
    ]


def names_text(names: list[str] | None) -> str:
    return ",".join(names) if names else "-"


def _grants_text(grants: list[dict[str, Any]] | None) -> str:
    return " ".join(grant_text(grant) for grant in grants) if grants else "-"
