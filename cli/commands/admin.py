"""Node-wide commands: `checkpoint` and `snapshot create|list` (`status` is in cluster.py)."""

from __future__ import annotations

from typing import Any

import typer

from ..output import OutputFormat, emit_fields, emit_json, emit_table
from .options import FormatOption, TokenOption, UrlOption, connect, output_format

app = typer.Typer()  # added to kvctl without a name: its commands are top-level ones
snapshot_app = typer.Typer(no_args_is_help=True, help="Create and list snapshots.")


@app.command()
def checkpoint(
    ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Run a checkpoint now: snapshot, control file, old WAL removed."""
    with connect(ctx, url, token) as client:
        _emit_document(output_format(ctx, output), client.checkpoint())


@snapshot_app.command("create")
def snapshot_create(
    ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Write a snapshot now (a checkpoint)."""
    with connect(ctx, url, token) as client:
        _emit_document(output_format(ctx, output), client.create_snapshot())


@snapshot_app.command("list")
def snapshot_list(
    ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """List the snapshots in the node's data directory."""
    with connect(ctx, url, token) as client:
        snapshots = client.list_snapshots()
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json({"snapshots": snapshots})
    else:
        emit_table(("NAME", "BYTES", "CURRENT"), [(s["name"], s["bytes"], s["current"]) for s in snapshots])


def _emit_document(output: OutputFormat, document: dict[str, Any]) -> None:
    if output is OutputFormat.JSON:
        emit_json(document)
    else:
        emit_fields(document.items())
