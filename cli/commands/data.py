"""Key commands: `get`, `set`, `del`, `incr` and `keys` (which follows the node's pages)."""

from __future__ import annotations

import base64
import sys
from dataclasses import asdict
from fnmatch import fnmatchcase
from typing import Annotated, Any

import typer

from ..client import KvClient, KvctlError
from ..output import OutputFormat, emit_bytes, emit_json, emit_line, emit_table
from .options import FormatOption, TokenOption, UrlOption, connect, output_format

KEYS_LIMIT_DEFAULT = 1000
KEYS_PAGE_DEFAULT = 1000
GLOB_CHARS = "*?["

IfVersionOption = Annotated[
    int | None, typer.Option("--if-version", min=0, help="Only if the key is at this version (compare-and-set).")
]

app = typer.Typer()  # added to kvctl without a name: its commands are top-level ones


@app.command()
def get(
    ctx: typer.Context, key: str, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """Print a key's value (raw bytes; json shows version and expiry too)."""
    with connect(ctx, url, token) as client:
        value = client.get(key)
    if output_format(ctx, output) is OutputFormat.TABLE:
        emit_bytes(value.data)
        return
    document: dict[str, Any] = {"key": value.key}
    try:
        document["value"] = value.data.decode("utf-8")
    except UnicodeDecodeError:
        document["value_base64"] = base64.b64encode(value.data).decode("ascii")
    emit_json({**document, "version": value.version, "expires_at": value.expires_at})


@app.command("set")
def set_value(
    ctx: typer.Context,
    key: str,
    value: Annotated[str, typer.Argument(help="The value, or - to read bytes from stdin.")],
    ttl: Annotated[int | None, typer.Option("--ttl", min=1, help="Expire after this many seconds.")] = None,
    if_version: IfVersionOption = None,
    create_only: Annotated[bool, typer.Option("--create-only", help="Fail if the key exists.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Set a key's value."""
    if if_version is not None and create_only:
        raise typer.BadParameter("--if-version and --create-only exclude each other")
    data = sys.stdin.buffer.read() if value == "-" else value.encode("utf-8")
    with connect(ctx, url, token) as client:
        written = client.put(key, data, ttl, if_version, create_only)
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(asdict(written))
    else:
        action = "created" if written.created else "updated"
        emit_line(f"{action} {key} version={written.version} commit_lsn={written.commit_lsn}")


@app.command("del")
def delete_key(
    ctx: typer.Context,
    key: str,
    if_version: IfVersionOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Delete a key (fails if it does not exist)."""
    with connect(ctx, url, token) as client:
        commit_lsn = client.delete(key, if_version)
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json({"key": key, "deleted": True, "commit_lsn": commit_lsn})
    else:
        emit_line(f"deleted {key} commit_lsn={commit_lsn}")


@app.command()
def incr(
    ctx: typer.Context,
    key: str,
    by: Annotated[int, typer.Option("--by", help="Amount to add (may be negative).")] = 1,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Add to an integer value (a missing key counts as 0) and print the result."""
    with connect(ctx, url, token) as client:
        answer = client.incr(key, by)
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(answer)
    else:
        emit_line(str(answer["value"]))


@app.command()
def keys(
    ctx: typer.Context,
    pattern: Annotated[str | None, typer.Option("--pattern", help="Glob such as 'user:*' (fnmatch).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many keys.")] = KEYS_LIMIT_DEFAULT,
    page_size: Annotated[
        int, typer.Option("--page-size", min=1, help="Keys per request to the node.")
    ] = KEYS_PAGE_DEFAULT,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """List keys matching a pattern, in key order."""
    with connect(ctx, url, token) as client:
        found, truncated = collect_keys(client, pattern, limit, page_size)
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json({"keys": found, "truncated": truncated})
        return
    rows = [(item["key"], item["version"], item["value_bytes"], item.get("expires_at")) for item in found]
    emit_table(("KEY", "VERSION", "BYTES", "EXPIRES"), rows)
    if truncated:
        print(f"kvctl: showing the first {limit} matching keys; raise --limit to see more", file=sys.stderr)


def glob_prefix(pattern: str) -> str:
    """The literal text before the first glob character: what the node can filter on."""
    cut = next((index for index, char in enumerate(pattern) if char in GLOB_CHARS), len(pattern))
    return pattern[:cut]


def collect_keys(
    client: KvClient, pattern: str | None, limit: int, page_size: int
) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` keys matching `pattern`, following the node's pages; and whether more match."""
    prefix = glob_prefix(pattern) if pattern is not None else ""
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = client.list_keys(prefix, after, page_size)
        for item in page.keys:
            if pattern is None or fnmatchcase(item["key"], pattern):
                if len(found) == limit:
                    return found, True
                found.append(item)
        if page.next_after is None:
            return found, False
        if after is not None and page.next_after <= after:
            raise KvctlError(f"node sent a page cursor that does not advance ({page.next_after!r})")
        after = page.next_after
