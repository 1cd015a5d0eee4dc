"""Cluster commands: `status` (one node, or a table of several), `promote` and `rejoin`.

`status` with several `--url` asks every node at once and shows one row each; a node that
does not answer is a row saying so, never a failure of the command. What the rows mean
together (two primaries taking writes, nodes of different systems, no primary, a lost
slot) is worked out by `cluster_problems`, which does no I/O.

`rejoin` returns once the node is back: the node answers with its plan, then restarts
itself in place (same process, same URL) to carry it out, so kvctl waits for a replica
whose uptime began after the request.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from ..client import KvClient, KvctlError, NodeUnreachable
from ..credentials import Target, config_path, load_login, normalize_url, resolve
from ..output import OutputFormat, emit_fields, emit_json, emit_line, emit_table
from .options import FormatOption, TokenOption, UrlOption, connect, output_format

app = typer.Typer()  # added to kvctl without a name: its commands are top-level ones

CLUSTER_NODES_MAX = 64
# /v1/status "lsn" fields, in the order `kvctl status` prints them (PostgreSQL's names).
LSN_FIELDS = ("insert_lsn", "write_lsn", "flush_lsn", "commit_lsn", "apply_lsn", "redo_lsn")
NODE_HEADERS = (
    "NODE",
    "NAME",
    "ROLE",
    "STATE",
    "TIMELINE",
    "FLUSH_LSN",
    "APPLY_LSN",
    "LAG_BYTES",
    "LAG_S",
    "LAST_CONTACT",
)
# `kvctl status` found a problem (it prints everything first); as `wal verify` exits 1 on corruption.
EXIT_PROBLEMS = 1
REJOIN_WAIT_S_DEFAULT = 60.0
REJOIN_POLL_INTERVAL_S = 0.2

UrlsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--url",
        metavar="URL",
        help="Node URL (default: $KVCTL_URL, then the login file, then http://127.0.0.1:8080). Give it several "
        "times for a cluster view, one row per node.",
    ),
]


@dataclass(frozen=True, slots=True)
class NodeReport:
    """One node's status document, or why there is none: `unreachable: <reason>` when it gave no
    answer at all, `error: <reason>` when it answered with one (a 401, say)."""

    url: str
    status: dict[str, Any] | None
    error: str | None = None


# -- status -------------------------------------------------------------------------------


@app.command()
def status(ctx: typer.Context, url: UrlsOption = None, token: TokenOption = None, output: FormatOption = None) -> None:
    """Show a node's role, state, timeline, LSNs and last checkpoint; with several --url, a cluster table.

    Exit status 1 when what it shows is a problem, after showing all of it: a fenced node; with several --url, any problem it names (`warning:` lines, "problems" in JSON): a split brain, no primary taking writes, a fenced former primary, nodes of different systems, a lost slot, no node answering. Also 1 when it cannot ask at all; 2 for bad usage.
    """
    urls = list(dict.fromkeys(normalize_url(text) for text in url or []))
    if len(urls) > CLUSTER_NODES_MAX:
        raise typer.BadParameter(f"at most {CLUSTER_NODES_MAX} nodes", param_hint="--url")
    if len(urls) > 1:
        healthy = _cluster_status(ctx, urls, token, output_format(ctx, output))
    else:
        with connect(ctx, urls[0] if urls else None, token) as client:
            document = client.status()
        if output_format(ctx, output) is OutputFormat.JSON:
            emit_json(document)
        else:
            emit_fields(status_fields(document))
        healthy = not is_fenced(document)
    if not healthy:
        raise typer.Exit(EXIT_PROBLEMS)


def _cluster_status(ctx: typer.Context, urls: list[str], token: str | None, output: OutputFormat) -> bool:
    """Print the cluster view; True when it names no problem."""
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        reports = list(pool.map(_report, _cluster_targets(ctx, urls, token)))
    problems = cluster_problems(reports)
    if output is OutputFormat.JSON:
        nodes = [{"url": r.url, "status": r.status, "error": r.error} for r in reports]
        emit_json({"nodes": nodes, "problems": problems})
    else:
        emit_table(NODE_HEADERS, [node_row(report) for report in reports])
        for problem in problems:
            emit_line(f"warning: {problem}")
    return not problems


def _cluster_targets(ctx: typer.Context, urls: list[str], token: str | None) -> list[Target]:
    login = load_login(config_path(os.environ))
    return [resolve(url, token or ctx.obj.token, os.environ, login) for url in urls]


def _report(target: Target) -> NodeReport:
    try:
        with KvClient(target.url, target.token, unauthorized_hint=target.hint) as client:
            return NodeReport(target.url, client.status())
    except NodeUnreachable as error:
        return NodeReport(target.url, None, f"unreachable: {error.reason}")
    except KvctlError as error:
        return NodeReport(target.url, None, f"error: {error.message}")


def node_row(report: NodeReport) -> tuple[object, ...]:
    """NODE NAME ROLE STATE TIMELINE FLUSH_LSN APPLY_LSN LAG_BYTES LAG_S LAST_CONTACT. A replica's
    positions and lag are its own view of its stream; a primary's are its own WAL's, no lag."""
    document = report.status
    if document is None:
        return (report.url, None, None, report.error, None, None, None, None, None, None)
    lsn = document.get("lsn") or {}
    replication = document.get("replication")
    if replication is None:
        positions: tuple[object, ...] = (lsn.get("flush_lsn"), lsn.get("apply_lsn"), None, None, None)
    else:
        contact = replication.get("last_contact_s_ago")
        positions = (
            lsn.get("flush_lsn"),
            lsn.get("apply_lsn"),
            replication.get("lag_bytes"),
            replication.get("lag_s"),
            None if contact is None else f"{contact:g} s ago",
        )
    return (
        report.url,
        document.get("name"),
        document.get("role"),
        document.get("state"),
        document.get("timeline"),
        *positions,
    )


def cluster_problems(reports: Sequence[NodeReport]) -> list[str]:
    """What is wrong with the cluster as a whole, judged from the nodes that answered."""
    answered = [(report.url, report.status) for report in reports if report.status is not None]
    if not answered:
        return ["no node answered"]
    problems = []
    systems = {str(document.get("system_identifier")) for _, document in answered}
    if len(systems) > 1:
        described = ", ".join(f"{url} ({document.get('system_identifier')})" for url, document in answered)
        problems.append(f"the nodes belong to different systems (initdb'd apart): {described}")
    primaries = [(url, document) for url, document in answered if document.get("role") == "primary"]
    writable = [(url, document) for url, document in primaries if not is_fenced(document)]
    if len(writable) > 1:
        described = ", ".join(f"{url} (timeline {document.get('timeline')})" for url, document in writable)
        problems.append(f"split brain: {len(writable)} unfenced primaries take writes: {described}")
    elif not writable:
        problems.append("none of the nodes that answered is a primary taking writes")
    else:
        leader = writable[0][0]
        problems.extend(
            f"{url} is a fenced former primary; make it a replica: kvctl rejoin --url {url} --primary {leader}"
            for url, document in primaries
            if is_fenced(document)
        )
    for url, document in writable:  # a fenced primary's slots are stale by nature
        for slot in document.get("replicas") or []:
            if slot.get("state") == "lost":
                problems.append(f"{url}: slot {slot.get('name')} is lost; its replica will take a new base backup")
        alarm = (document.get("archive") or {}).get("alarm")
        if alarm:
            problems.append(f"{url}: archive: {alarm}")
    return problems


def is_fenced(document: dict[str, Any]) -> bool:
    """A fenced primary refuses writes; until the fence is persisted its state says read-only."""
    return document.get("state") == "fenced" or str(document.get("read_only_reason") or "").startswith("fenced")


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
        *((name, lsn.get(name)) for name in LSN_FIELDS),
        ("keys", document.get("keys")),
        ("fsync", document.get("fsync")),
        ("last_checkpoint", f"{last['snapshot']} (redo {last['redo_lsn']}, {last['seconds']} s)" if last else None),
        *(_replica_field(index, replica) for index, replica in enumerate(document.get("replicas") or [])),
        *_archive_fields(document.get("archive")),
    ]


def _archive_fields(archive: dict[str, Any] | None) -> list[tuple[str, object]]:
    """`archive` (URL, how far, how far behind), and its error and alarm when there are some."""
    if not archive:
        return []
    if "state" in archive:
        return [("archive", f"{archive['url']} ({archive['state']})")]
    behind = f"lag {archive['lag_bytes']} bytes, {archive['lag_s']} s"
    fields: list[tuple[str, object]] = [
        (
            "archive",
            f"{archive['url']} archived to {archive['archived_lsn']} at {archive['last_archived_at']} ({behind})",
        ),
        ("archive.snapshot", f"{archive['last_snapshot']} at {archive['last_snapshot_at']}"),
    ]
    if archive.get("last_error"):
        fields.append(("archive.error", f"{archive['last_error']} (at {archive['last_error_at']})"))
    if archive.get("alarm"):
        fields.append(("archive.ALARM", archive["alarm"]))
    return fields


def _replica_field(index: int, replica: dict[str, Any]) -> tuple[str, object]:
    """`replica.<name>  field=value ...`: whatever the node reports (lag, LSNs, state)."""
    name = replica.get("name", index)
    return f"replica.{name}", " ".join(f"{field}={value}" for field, value in replica.items() if field != "name")


# -- promote and rejoin -------------------------------------------------------------------


@app.command()
def promote(ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None) -> None:
    """Make a replica the primary of a new timeline (failover). Stop or fence the old primary first."""
    with connect(ctx, url, token) as client:
        document = client.promote()
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(document)
    else:
        emit_fields(document.items())


@app.command()
def rejoin(
    ctx: typer.Context,
    primary: Annotated[str, typer.Option("--primary", help="URL of the new primary to follow.")],
    wait: Annotated[
        float,
        typer.Option("--wait", min=0, help="Seconds to wait for the node to restart as a replica; 0: do not wait."),
    ] = REJOIN_WAIT_S_DEFAULT,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Make a former primary (--url) a replica of the new primary: its divergent WAL or data is moved
    into data/diverged/, then it restarts itself and follows."""
    new_primary = normalize_url(primary)
    output = output_format(ctx, output)
    with connect(ctx, url, token) as client:
        requested_at = time.monotonic()
        plan = client.rejoin(new_primary)
        if output is OutputFormat.TABLE:
            emit_fields(plan.items())
            if wait:
                emit_line(f"waiting up to {wait:g} s for {client.url} to restart as a replica")
        back = wait_for_replica(client.url, client.status, requested_at, wait) if wait else None
    if output is OutputFormat.JSON:
        emit_json({"plan": plan, "status": back})
    elif back is not None:
        emit_line(f"{client.url} is back as a replica of {new_primary} (state {back.get('state')})")


def wait_for_replica(
    url: str,
    fetch_status: Callable[[], dict[str, Any]],
    requested_at: float,
    wait_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the node answers as a replica that started after `requested_at` (a clock()
    reading): before its restart a node that was a replica already would pass for one. A status
    answer means the node is ready; while it restarts it refuses connections or answers 503."""
    deadline = requested_at + wait_s
    last = "no answer yet"
    while True:
        try:
            document = fetch_status()
        except KvctlError as error:
            last = error.message
        else:
            uptime_s = float(document.get("uptime_s", "inf"))
            if document.get("role") == "replica" and uptime_s <= clock() - requested_at:
                return document
            last = f"{document.get('role')} ({document.get('state')}), up {uptime_s:g} s"
        if clock() >= deadline:
            raise KvctlError(f"{url} did not come back as a replica within {wait_s:g} s; last seen: {last}")
        sleep(REJOIN_POLL_INTERVAL_S)
