"""Node-wide commands: `checkpoint`, `status` and `snapshot create|list`."""

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


@app.command()
def status(ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None) -> None:
    """Show the node's role, state, timeline, LSNs and last checkpoint."""
    with connect(ctx, url, token) as client:
        document = client.status()
    if output_format(ctx, output) is OutputFormat.JSON:
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
