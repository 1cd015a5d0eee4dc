"""`kvctl audit`: the node's audit log (logins, refusals, user, role, key and policy changes),
read through the superuser route instead of a file on the node's disk."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from kvstore.node.audit_reader import since_text

from ..output import OutputFormat, emit_line
from .options import FormatOption, TokenOption, UrlOption, connect, output_format
from .wal import stop_on_ctrl_c

app = typer.Typer()  # added to kvctl without a name: `kvctl audit`

AGO = re.compile(r"(\d+)([smhd])")
AGO_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# Fields shown first, in this order; the rest follow as they come.
LEADING_FIELDS = ("user", "by", "address")


def since_time(text: str, now: datetime | None = None) -> str:
    """`--since`: an ISO 8601 time (no zone: UTC) or a span ago (`30s`, `10m`, `2h`, `7d`), as
    the ISO 8601 UTC time the node takes."""
    ago = AGO.fullmatch(text.strip())
    if ago is not None:
        moment = (now or datetime.now(UTC)) - timedelta(**{AGO_UNITS[ago.group(2)]: int(ago.group(1))})
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        return since_text(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither an ISO 8601 time (2026-12-03T10:00:00Z) nor a span ago (30s, 10m, 2h, 7d)"
        ) from None


@app.command()
def audit(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option("--since", help="From this time on: ISO 8601 (no zone: UTC) or a span ago (30s, 10m, 2h, 7d)."),
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="Only lines about this user: acted on, acting, or tried in a login.")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="Keep printing new lines.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Print the node's audit log, oldest retained line first (superuser only). Ctrl-C stops --follow."""
    start = since_time(since) if since is not None else None
    if follow:
        stop_on_ctrl_c()
    as_json = output_format(ctx, output) is OutputFormat.JSON
    with connect(ctx, url, token) as client:
        for text in client.audit(start, user, follow):
            emit_line(text if as_json else audit_line(text))


def audit_line(text: str) -> str:
    """`TIME  EVENT  field=value ...`: the fields most read first, values as JSON when not plain."""
    try:
        event: dict[str, Any] = json.loads(text)
    except ValueError:
        return text
    stamp, name = event.pop("ts", "?"), event.pop("event", "?")
    ordered = [(key, event.pop(key)) for key in LEADING_FIELDS if key in event] + list(event.items())
    fields = " ".join(f"{key}={_value(value)}" for key, value in ordered)
    return f"{stamp}  {name:<22} {fields}".rstrip()


def _value(value: object) -> str:
    if isinstance(value, str) and value and not any(ch.isspace() or ch in '"=' for ch in value):
        return value
    return json.dumps(value, ensure_ascii=False)
