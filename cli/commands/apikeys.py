"""`kvctl apikey` (superuser only): create, list and revoke API keys; with the parsing of
`--expires` (a time or a duration) and `--cidr`."""

from __future__ import annotations

import ipaddress
import re
import sys
import time
from typing import Annotated, Any

import typer

from ..output import OutputFormat, emit_json, emit_line, emit_table, utc_text
from .options import FormatOption, TokenOption, UrlOption, UserOption, connect, output_format
from .users import names_text, parse_valid_until

DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION_TEXT = re.compile(r"(?:\d+[smhdw])+")
DURATION_PART = re.compile(r"(\d+)([smhdw])")
APIKEY_TOKEN_WARNING = "kvctl: save this token now; it will not be shown again"

app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys (superuser only).")


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


@app.command("create")
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
    with connect(ctx, url, token) as client:
        key = client.create_apikey(name, user, list(dict.fromkeys(cidr or [])), expires)
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(key)
        return
    emit_line(f"created API key {key['name']} for {key['user']} (id {key['id']}, expires {_expires_text(key)})")
    emit_line(str(key["token"]))
    print(APIKEY_TOKEN_WARNING, file=sys.stderr, flush=True)


@app.command("list")
def apikey_list(
    ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """List the API keys (never their tokens)."""
    with connect(ctx, url, token) as client:
        keys = client.list_apikeys()
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json({"apikeys": keys})
    else:
        emit_table(("NAME", "ID", "USER", "CIDRS", "EXPIRES", "LAST_USED"), [apikey_row(key) for key in keys])


@app.command("revoke")
def apikey_revoke(
    ctx: typer.Context, name: str, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Revoke an API key: its token is refused from now on."""
    with connect(ctx, url, token) as client:
        client.revoke_apikey(name)
    if output_format(ctx, output) is OutputFormat.JSON:
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
        names_text(key.get("cidrs")),
        _expires_text(key),
        utc_text(key.get("last_used_at")) if key.get("last_used_at") is not None else "never",
    )


def _expires_text(key: dict[str, Any]) -> str:
    expires_at = key.get("expires_at")
    return str(utc_text(expires_at)) if expires_at is not None else "never"
