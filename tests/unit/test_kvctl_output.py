"""kvctl's printing decisions that need no node: which format the command line asks for."""

from __future__ import annotations

import json
from typing import Any

from kvstore.cli.output import OutputFormat, emit_json, emit_line, json_text, requested_format


def test_requested_format_is_the_last_format_option_before_a_double_dash() -> None:
    assert requested_format(["--format", "json", "status"]) is OutputFormat.JSON
    assert requested_format(["status", "--format=json"]) is OutputFormat.JSON
    assert requested_format(["--format=json", "status", "--format", "table"]) is OutputFormat.TABLE
    assert requested_format(["set", "--", "--format", "json"]) is OutputFormat.TABLE
    assert requested_format(["status", "--format", "yaml"]) is OutputFormat.TABLE  # typer refuses it
    assert requested_format(["status", "--format"]) is OutputFormat.TABLE


def test_json_lines_with_terminal_controls_stay_valid_json_and_show_nothing_raw(capsys: Any) -> None:
    """`kvctl wal tail --format json` prints the node's JSON lines through the same escaping as
    tables: a C1 control (U+009B is a terminal's CSI) or a bidi override comes out as a JSON
    escape, so the line still parses to the same key and nothing reaches the terminal raw."""
    key = "k\u009b2J\u202eexe\u007f"
    line = json_text({"key": key})
    emit_line(line)
    emit_json({"key": key})
    shown = capsys.readouterr().out
    assert not any(character in shown for character in "\u009b\u202e\u007f")
    first, rest = shown.split("\n", 1)
    assert json.loads(first) == {"key": key} and json.loads(rest) == {"key": key}
