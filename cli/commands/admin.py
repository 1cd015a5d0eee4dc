"""Node-wide commands: `checkpoint` and `snapshot create|list|export` (`status` is in cluster.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..output import OutputFormat, emit_fields, emit_json, emit_table
from .options import FormatOption, TokenOption, UrlOption, connect, output_format

app = typer.Typer()  # added to kvctl without a name: its commands are top-level ones
snapshot_app = typer.Typer(no_args_is_help=True, help="Create, list and export snapshots.")


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


@snapshot_app.command("export")
def snapshot_export(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="s3://bucket/prefix (the node's AWS_* environment) or file:///absolute/path (on the node's disk).",
        ),
    ],
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Checkpoint, then have the node upload the snapshot and its manifest to an object store."""
    with connect(ctx, url, token) as client:
        document = client.export_snapshot(to)
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(document)
    else:
        emit_fields([("to", document["to"]), *document["manifest"].items()])


def _emit_document(output: OutputFormat, document: dict[str, Any]) -> None:
    if output is OutputFormat.JSON:
        emit_json(document)
    else:
        emit_fields(document.items())
