"""`kvctl backup list|verify URL` and `kvctl restore URL`: an archive in an object store, read
from kvctl's own machine (credentials and endpoint from its AWS_* environment), not through a node."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from kvstore.node.archive.access import Stores, open_archive
from kvstore.node.archive.inventory import Inventory, Span, Step
from kvstore.node.archive.restore import RestoreResult, Target, parse_time, restore, utc_ms
from kvstore.node.archive.store import ArchiveError, open_store
from kvstore.node.archive.verify import VerifyReport, verify
from kvstore.node.datadir import DataDirError
from kvstore.node.wal.format import format_lsn, parse_lsn

from ..archive_progress import DownloadBar
from ..client import KvctlError
from ..output import OutputFormat, emit_fields, emit_json, emit_line, emit_table
from .options import FormatOption, output_format

backup_app = typer.Typer(no_args_is_help=True, help="Backups in object stores: list, verify.")
app = typer.Typer()  # added to kvctl without a name: `restore` is a top-level command

UrlArgument = Annotated[str, typer.Argument(metavar="URL", help="s3://bucket/prefix or file:///absolute/path")]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="The archive key (an encrypted archive): a file of mode 0600. KVSTORE_ARCHIVE_KEY wins over it.",
    ),
]


def _open(store_url: str, key_file: Path | None) -> Stores:
    return open_archive(store_url, key_file, os.environ.get("KVSTORE_ARCHIVE_KEY"))


def _inventory(store_url: str) -> Inventory:
    try:
        return Inventory.read(open_store(store_url))
    except ArchiveError as exc:
        raise KvctlError(str(exc)) from None


@backup_app.command("list")
def backup_list(ctx: typer.Context, store_url: UrlArgument, output: FormatOption = None) -> None:
    """List an archive: its snapshots (oldest first) and how far each can be restored, its
    timelines, and the WAL it holds along the latest timeline's path, with any gaps."""
    inventory = _inventory(store_url)
    document = _listing(inventory)
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(document)
        _fail_on_problems(document["problems"])
        return
    emit_table(
        ("TIMELINE", "REDO_LSN", "CONSISTENT_LSN", "BYTES", "CREATED_AT", "SNAPSHOT"),
        [(m.timeline, m.redo_lsn, m.consistent_lsn, m.bytes, m.created_at, m.snapshot) for m in inventory.snapshots],
    )
    emit_line("")
    emit_table(
        ("SNAPSHOT", "RESTORABLE_FROM", "RESTORABLE_TO"),
        [(r["snapshot"], r["from_lsn"], r["to_lsn"]) for r in document["restorable"]],
    )
    emit_line("")
    emit_table(
        ("TIMELINE", "PARENT", "BEGINS_AT"),
        [(t["timeline"], t["parent"], t["begins_at"]) for t in document["timelines"]],
    )
    wal = document["wal"]
    if wal is not None:
        emit_line("")
        emit_table(
            ("WAL", "START_LSN", "END_LSN", "TIMELINES"),
            [("held", r["start_lsn"], r["end_lsn"], r["timelines"]) for r in wal["ranges"]]
            + [("GAP", g["start_lsn"], g["end_lsn"], g["timelines"]) for g in wal["gaps"]],
        )
    _fail_on_problems(document["problems"])


def _fail_on_problems(problems: list[str]) -> None:
    """What could not be read is listed as far as it goes, then named in the error (exit 1)."""
    if problems:
        raise KvctlError("; ".join(problems))


def _listing(inventory: Inventory) -> dict[str, Any]:
    problems = [f"{item.name}: {item.reason}" for item in inventory.unreadable]
    restorable = []
    for manifest in inventory.snapshots:
        try:
            span = inventory.restorable(manifest, inventory.path_of_snapshot(manifest))
        except ArchiveError as exc:
            problems.append(str(exc))
            span = None
        restorable.append(
            {
                "snapshot": manifest.snapshot,
                "from_lsn": format_lsn(span.start_lsn) if span else None,
                "to_lsn": format_lsn(span.end_lsn) if span else None,
            }
        )
    timelines = []
    for timeline in inventory.timelines():
        switches = inventory.histories.get(timeline, [])
        last = switches[-1] if switches else None
        timelines.append(
            {
                "timeline": timeline,
                "parent": last.parent if last else None,
                "begins_at": format_lsn(last.switch_lsn) if last else None,
            }
        )
    wal: dict[str, Any] | None = None
    latest = inventory.latest_timeline()
    if latest is not None:
        try:
            path = inventory.path(latest)
        except ArchiveError as exc:
            problems.append(str(exc))
        else:
            ranges, gaps = inventory.coverage(path)
            wal = {
                "timeline": latest,
                "path": [_step(step) for step in path],
                "ranges": [_span(span, path) for span in ranges],
                "gaps": [_span(span, path) for span in gaps],
            }
    return {
        "snapshots": [m.document() for m in inventory.snapshots],
        "restorable": restorable,
        "timelines": timelines,
        "wal": wal,
        "problems": problems,
    }


def _step(step: Step) -> dict[str, Any]:
    end = format_lsn(step.end_lsn) if step.end_lsn is not None else None
    return {"timeline": step.timeline, "start_lsn": format_lsn(step.start_lsn), "end_lsn": end}


def _span(span: Span, path: list[Step]) -> dict[str, Any]:
    """A range of LSNs and the timelines of the path it runs over (`1,2`)."""
    on = [
        str(step.timeline)
        for step in path
        if step.start_lsn < span.end_lsn and (step.end_lsn is None or span.start_lsn < step.end_lsn)
    ]
    return {**span.document(), "timelines": ",".join(on)}


@backup_app.command("verify")
def backup_verify(
    ctx: typer.Context, store_url: UrlArgument, key_file: KeyFileOption = None, output: FormatOption = None
) -> None:
    """Download and check every object of an archive: checksums, every WAL record's CRC, every
    snapshot whole, and WAL continuity from each snapshot. Exit status 0 only when all is well."""
    try:
        stores = _open(store_url, key_file)
        with DownloadBar("verify") as bar:
            report = verify(stores, bar)
    except ArchiveError as exc:
        raise KvctlError(str(exc)) from None
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(report.document())
    else:
        _print_report(report)
    if not report.ok:
        raise KvctlError(f"{stores.url}: {len(report.damaged)} damaged object(s), {len(report.gaps)} gap(s) in the WAL")


def _print_report(report: VerifyReport) -> None:
    for damaged in report.damaged:
        emit_line(f"damaged  {damaged.name}: {damaged.reason}")
    for gap in report.gaps:
        end = format_lsn(gap.end_lsn) if gap.end_lsn is not None else "end"
        emit_line(f"gap      timeline {gap.timeline} {format_lsn(gap.start_lsn)} to {end}: {gap.reason}")
    verdict = "ok" if report.ok else "PROBLEMS FOUND"
    emit_line(f"{report.objects} objects, {report.bytes} bytes checked: {verdict}")


def _target_lsn(text: str) -> int:
    try:
        return parse_lsn(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _target_time(text: str) -> int:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command("restore")
def restore_command(
    ctx: typer.Context,
    store_url: UrlArgument,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="The new data directory (must not exist, or be empty).")],
    target_time: Annotated[
        int | None,
        typer.Option(
            "--target-time",
            metavar="ISO8601",
            parser=_target_time,
            help="Stop before the first write logged after this time (no offset: UTC).",
        ),
    ] = None,
    target_lsn: Annotated[
        int | None,
        typer.Option(
            "--target-lsn",
            metavar="X/Y",
            parser=_target_lsn,
            help="Stop at this LSN (the records ending at or before it).",
        ),
    ] = None,
    timeline: Annotated[
        int | None,
        typer.Option("--timeline", min=1, help="Restore along this timeline (default: the archive's latest)."),
    ] = None,
    key_file: KeyFileOption = None,
    output: FormatOption = None,
) -> None:
    """Restore an archive into a new data directory: its latest point, or the state at a time or an
    LSN. The restored node is a primary on a new timeline."""
    if target_time is not None and target_lsn is not None:
        raise typer.BadParameter("give --target-time or --target-lsn, not both")
    target = Target(lsn=target_lsn, time_ms=target_time, timeline=timeline)
    try:
        stores = _open(store_url, key_file)
        with DownloadBar("restore") as bar:
            result = restore(stores, data_dir, target, bar)
    except (ArchiveError, DataDirError, OSError) as exc:
        raise KvctlError(str(exc)) from None
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json({**result.document(), "start": _start_command(result)})
        return
    _print_result(result)


def _print_result(result: RestoreResult) -> None:
    emit_fields(
        [
            ("restored into", result.data_dir),
            (
                "snapshot",
                f"{result.snapshot.snapshot} (timeline {result.snapshot.timeline}, redo {result.snapshot.redo_lsn})",
            ),
            ("downloaded", f"{result.downloaded_bytes} bytes ({result.segments} WAL segments)"),
            ("replayed", f"{result.records_replayed} records, {result.wal_bytes} bytes of WAL"),
            ("stopped at", format_lsn(result.stop_lsn)),
            ("last write time", utc_ms(result.last_time_ms) if result.last_time_ms is not None else None),
            ("new timeline", f"{result.timeline} (branched off timeline {result.parent_timeline})"),
            ("seconds", round(result.seconds, 3)),
        ]
    )
    emit_line("")
    emit_line(
        "The catalog's token signing keys are sealed with the original cluster's key: start the node with "
        "that KVSTORE_CLUSTER_KEY, or with a copy of the old data directory's cluster.key in the new one."
    )
    emit_line(f"Start it with: {_start_command(result)}")


def _start_command(result: RestoreResult) -> str:
    return f"kvstored --data-dir {shlex.quote(str(result.data_dir))}"
