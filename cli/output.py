"""How kvctl prints: aligned tables and field lists for people, JSON for scripts, and errors.

Text for people never carries a key's control characters to the terminal: escape sequences,
carriage returns, bidi overrides and the like are shown escaped (`\x1b`, `\u202e`), so a key
can neither rewrite the screen nor disguise itself. Raw values (`kvctl get`) and JSON are
for scripts and stay exact.

Results go to stdout and are flushed, so a pipe sees each line as it is made; a reader
that has gone away (`kvctl keys | head`) raises `StdoutClosed`. Errors go to stderr as
`kvctl: <message>`, or with `--format json` as one JSON document (`emit_error`);
`kvctl.main` decides when.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

COLUMN_GAP = "  "
# C0 and C1 controls (tab and newline too: they would break a table), DEL, and the Unicode
# marks and overrides that reorder text (Trojan Source, CVE-2021-42574).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNPRINTABLE_IN_JSON = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
FORMAT_FLAG = "--format"


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


class StdoutClosed(Exception):
    """Whoever read kvctl's output stopped reading (`| head`): not a failure. Not an OSError, so
    that typer, which turns a broken pipe into exit status 1, lets it through to `kvctl.main`."""


def requested_format(argv: Sequence[str]) -> OutputFormat:
    """The `--format` the command line asks for, known even when it fails to parse (errors are
    printed in that format): the last one wins, as for the option; `--` ends the options."""
    chosen = OutputFormat.TABLE
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == FORMAT_FLAG and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(f"{FORMAT_FLAG}="):
            value = arg.partition("=")[2]
        else:
            continue
        if value in tuple(OutputFormat):  # any other value is a usage error typer reports
            chosen = OutputFormat(value)
    return chosen


def emit_error(code: str, message: str, output: OutputFormat) -> None:
    """An error on stderr: `kvctl: <message>`, or `{"error": {"code", "message"}}` on one line."""
    if output is OutputFormat.JSON:
        print(json_text({"error": {"code": code, "message": message}}), file=sys.stderr, flush=True)
    else:
        print(f"kvctl: {message}", file=sys.stderr, flush=True)


@contextmanager
def _stdout() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise StdoutClosed from None


def emit_json(document: Any) -> None:
    """One JSON document, indented for reading; it always parses."""
    with _stdout():
        print(_json_escaped(json.dumps(document, indent=2, ensure_ascii=False)), flush=True)


def json_text(value: object) -> str:
    """One JSON value on one line."""
    return _json_escaped(json.dumps(value, ensure_ascii=False))


def _json_escaped(text: str) -> str:
    """JSON text with the characters `printable` escapes written as JSON escapes: json.dumps
    already escapes C0 controls in strings, so outside strings only its own newlines remain."""
    return _UNPRINTABLE_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def emit_line(text: str) -> None:
    with _stdout():
        print(printable(text), flush=True)


def printable(text: str) -> str:
    """`text` with every character that could act on a terminal written as an escape: `\\uXXXX`,
    which is also how JSON writes it, so a JSON line stays valid JSON (json.dumps escapes C0
    controls itself, so inside JSON these characters only ever stand in strings)."""
    return _UNPRINTABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def emit_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A header line and rows, columns padded to their widest cell."""
    _emit_aligned([list(headers)] + [[cell_text(cell) for cell in row] for row in rows])


def emit_fields(fields: Iterable[tuple[str, object]]) -> None:
    """`name  value` lines, names aligned; no header."""
    _emit_aligned([[name, cell_text(value)] for name, value in fields])


def _emit_aligned(cells: list[list[str]]) -> None:
    if not cells:
        return
    cells = [[printable(text) for text in row] for row in cells]  # widths of what is shown
    widths = [max(len(row[column]) for row in cells) for column in range(len(cells[0]))]
    for row in cells:
        padded = [text.ljust(width) for text, width in zip(row[:-1], widths[:-1], strict=True)]
        emit_line(COLUMN_GAP.join([*padded, row[-1]]))


def emit_bytes(data: bytes) -> None:
    """Raw bytes as they are; a newline follows only on a terminal, so pipes get exact bytes."""
    with _stdout():
        sys.stdout.buffer.write(data)
        if sys.stdout.isatty() and not data.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")
        sys.stdout.buffer.flush()


def utc_text(epoch_s: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC (`2026-05-01T12:00:00Z`); None stays None (printed `-`)."""
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def cell_text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
