"""`kvctl watch PREFIX`: print the committed changes under a prefix as the node makes them."""

from __future__ import annotations

import base64
from typing import Annotated, Any

import orjson
import typer

from kvstore.client import Event, Progress
from kvstore.node.wal.format import format_lsn

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
    event's lsn). json prints the node's lines, progress lines too. A dropped connection is
    resumed where it stopped. Ctrl-C stops (exit 0)."""
    stop_on_ctrl_c()
    as_json = output_format(ctx, output) is OutputFormat.JSON
    start = format_lsn(from_lsn) if from_lsn is not None else None
    with connect(ctx, url, token) as client:
        for item in client.watch(prefix, start):
            if as_json:
                emit_line(orjson.dumps(_document(item)).decode())
            elif isinstance(item, Event):
                emit_line(_event_line(item))


def _document(item: Event | Progress) -> dict[str, Any]:
    """The node's own line for it (kvstore.client parsed it; a reconnect is invisible here)."""
    if isinstance(item, Progress):
        return {"type": "progress", "lsn": item.lsn}
    value = None if item.value is None else base64.b64encode(item.value).decode("ascii")
    return {
        "type": item.type,
        "key": item.key,
        "value_base64": value,
        "version": item.version,
        "expires_at": item.expires_at,
        "lsn": item.lsn,
    }


def _event_line(event: Event) -> str:
    text = f"{event.lsn}  {event.type:<3}  key={event.key} version={event.version}"
    if event.value is not None:
        text += f" bytes={len(event.value)}"
    return text
