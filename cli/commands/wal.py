"""`kvctl wal`: follow a node's WAL over HTTP (`tail`), or read a data directory's WAL
offline (`inspect`, `verify`); walview.py decodes and describes the records."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from kvstore.node.wal.format import format_lsn, parse_lsn

from .. import walview
from ..output import OutputFormat, emit_json, emit_line, json_text
from .options import FormatOption, TokenOption, UrlOption, connect, output_format


def _lsn(text: str) -> int:
    try:
        return parse_lsn(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


DataDirOption = Annotated[
    Path, typer.Option("--data-dir", help="Data directory of a node (read only; the node may be stopped).")
]
LsnOption = Annotated[int | None, typer.Option("--from", metavar="LSN", parser=_lsn, help="Start LSN, as X/Y.")]

app = typer.Typer(no_args_is_help=True, help="Follow a node's WAL, or inspect and verify one offline.")


@app.command("tail")
def wal_tail(
    ctx: typer.Context,
    from_lsn: LsnOption = None,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Keep printing new records.")] = True,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Print WAL records as the node commits them (default: from now on). Ctrl-C stops (exit status 0)."""
    stop_on_ctrl_c()
    as_json = output_format(ctx, output) is OutputFormat.JSON
    start = format_lsn(from_lsn) if from_lsn is not None else None
    with connect(ctx, url, token) as client:
        for line in client.wal_records(start, follow):
            emit_line(line.text if as_json else walview.tail_line(line.record))


def stop_on_ctrl_c() -> None:
    """From now on SIGINT ends kvctl at once with status 0, whatever it is blocked on.

    A Python signal handler cannot promise that: it runs only when the main thread next checks
    for signals, and a SIGINT that lands between sending the request and entering poll() for
    the answer leaves the main thread asleep until the read timeout. Nor can Python's own
    Ctrl-C handling (a kvctl started from a background job inherits SIGINT ignored and gets no
    KeyboardInterrupt at all; one that strikes while httpcore takes a lock can leave the lock
    held for ever). So SIGINT is blocked in every thread and a watcher thread takes it with
    sigwait(), which cannot miss it. Exiting on the spot is safe for a reader: every printed
    line is already flushed, and the kernel closes the socket.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # an ignored signal is dropped, even when blocked
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    threading.Thread(target=_exit_on_sigint, name="ctrl-c", daemon=True).start()


def _exit_on_sigint() -> None:
    signal.sigwait({signal.SIGINT})
    os._exit(0)


@app.command("inspect")
def wal_inspect(
    ctx: typer.Context,
    data_dir: DataDirOption,
    from_lsn: LsnOption = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Show at most this many records.")] = None,
    output: FormatOption = None,
) -> None:
    """List the WAL records in a data directory, like pg_waldump."""
    scan = walview.open_scan(data_dir, from_lsn)
    found = walview.read_records(scan, from_lsn, limit)
    if output_format(ctx, output) is OutputFormat.JSON:
        _emit_records_json(found)
        end = format_lsn(scan.end_lsn) if scan.end_lsn is not None else None
        torn = walview.torn_tail_document(scan.torn_tail) if scan.torn_tail else None
        emit_line(f'], "end_lsn": {json_text(end)}, "torn_tail": {json_text(torn)}}}')
        return
    emit_line(walview.inspect_header())
    for record in found:
        for text in walview.inspect_lines(record):
            emit_line(text)
    if scan.end_lsn is not None:
        emit_line(f"end of WAL at {format_lsn(scan.end_lsn)}")
    if scan.torn_tail is not None:
        emit_line(walview.describe_torn_tail(scan.torn_tail))


def _emit_records_json(found: Iterator[dict[str, Any]]) -> None:
    """Open `{"records": [` and stream one record a line, so a long WAL is never held in memory."""
    emit_line('{"records": [')
    for index, record in enumerate(found):
        emit_line(("," if index else "") + json_text(record))


@app.command("verify")
def wal_verify(ctx: typer.Context, data_dir: DataDirOption, output: FormatOption = None) -> None:
    """Check every WAL segment of a data directory; exit 1 on corruption."""
    found = walview.verify(data_dir)
    first = format_lsn(found.first_lsn if found.first_lsn is not None else found.end_lsn)
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(
            {
                "ok": True,
                "records": found.records,
                "first_lsn": first,
                "end_lsn": format_lsn(found.end_lsn),
                "segments": found.segments,
                "torn_tail": walview.torn_tail_document(found.torn_tail) if found.torn_tail else None,
            }
        )
        return
    plural = "" if found.segments == 1 else "s"
    text = (
        f"WAL OK: {found.records} records, LSN {first}..{format_lsn(found.end_lsn)}, {found.segments} segment{plural}"
    )
    emit_line(f"{text}; {walview.describe_torn_tail(found.torn_tail)}" if found.torn_tail else text)
