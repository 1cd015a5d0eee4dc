"""Node-wide commands: `checkpoint`, `profile` and `snapshot create|list|export` (`status` is in cluster.py)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..client import KvctlError
from ..output import OutputFormat, emit_fields, emit_json, emit_line, emit_table
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


class ProfileFormat(StrEnum):
    COLLAPSED = "collapsed"
    SPEEDSCOPE = "speedscope"


@app.command()
def profile(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("-o", "--output", help="File to write the profile to.", dir_okay=False)],
    seconds: Annotated[int, typer.Option("--seconds", min=1, max=60, help="How long to sample the node.")] = 10,
    form: Annotated[
        ProfileFormat,
        typer.Option(
            "--format",
            help="collapsed: `frame;frame count` lines (flamegraph.pl, speedscope.app); speedscope: its JSON format.",
        ),
    ] = ProfileFormat.COLLAPSED,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Sample the node's event loop for --seconds while it serves, and write the profile to a file."""
    with connect(ctx, url, token) as client:
        data = client.profile(seconds, form.value)
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise KvctlError(f"cannot write the profile to {out}: {exc.strerror}") from None
    emit_line(f"wrote {len(data)} bytes ({form.value}) to {out}")


def _emit_document(output: OutputFormat, document: dict[str, Any]) -> None:
    if output is OutputFormat.JSON:
        emit_json(document)
    else:
        emit_fields(document.items())
