"""`kvctl watch PREFIX`: print the committed changes under a prefix as the node makes them."""

from __future__ import annotations

import base64
from typing import Annotated, Any

import typer

from kvstore.node.wal.format import format_lsn

from ..client import KvctlError
from ..output import OutputFormat, emit_line
from .options import FormatOption, TokenOption, UrlOption, connect, output_format
from .wal import LsnOption, stop_on_ctrl_c

app = typer.Typer()  # added to kvctl without a name: `watch` is a top-level command


@app.command()
def watch(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="Only keys starting with this ('' for every key you may read).")],
    from_lsn: LsnOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Print changes under PREFIX as they commit (default: from now on; --from resumes after an
    event's lsn). json prints the node's lines as they are, progress lines too. Ctrl-C stops (exit 0)."""
    stop_on_ctrl_c()
    as_json = output_format(ctx, output) is OutputFormat.JSON
    start = format_lsn(from_lsn) if from_lsn is not None else None
    with connect(ctx, url, token) as client:
        for line in client.watch(prefix, start):
            event = line.record
            if as_json:
                emit_line(line.text)
            elif event.get("type") in ("set", "del"):
                emit_line(_event_line(event))
            if event.get("type") == "cancelled":
                raise KvctlError(f"the node ended the watch: {event.get('reason')}")


def _event_line(event: dict[str, Any]) -> str:
    text = f"{event['lsn']}  {event['type']:<3}  key={event['key']} version={event['version']}"
    if event["type"] == "set":
        text += f" bytes={len(base64.b64decode(event['value_base64']))}"
    return text
