"""`kvctl backup list URL`: the snapshots in an object store, read from kvctl's own machine
(credentials and endpoint from its AWS_* environment), not through a node."""

from __future__ import annotations

from typing import Annotated

import typer

from kvstore.node.archive.snapshots import list_snapshots
from kvstore.node.archive.store import ArchiveError, open_store

from ..client import KvctlError
from ..output import OutputFormat, emit_json, emit_table
from .options import FormatOption, output_format

backup_app = typer.Typer(no_args_is_help=True, help="Backups in object stores.")


@backup_app.command("list")
def backup_list(
    ctx: typer.Context,
    store_url: Annotated[str, typer.Argument(metavar="URL", help="s3://bucket/prefix or file:///absolute/path")],
    output: FormatOption = None,
) -> None:
    """List the snapshots exported to an object store, oldest first."""
    try:
        manifests = list_snapshots(open_store(store_url))
    except ArchiveError as exc:
        raise KvctlError(str(exc)) from None
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json({"snapshots": [m.document() for m in manifests]})
    else:
        emit_table(
            ("TIMELINE", "REDO_LSN", "CONSISTENT_LSN", "BYTES", "CREATED_AT", "SNAPSHOT"),
            [(m.timeline, m.redo_lsn, m.consistent_lsn, m.bytes, m.created_at, m.snapshot) for m in manifests],
        )
