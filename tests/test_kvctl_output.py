"""kvctl's printing decisions that need no node: which format the command line asks for."""

from __future__ import annotations

from kvstore.cli.output import OutputFormat, requested_format


def test_requested_format_is_the_last_format_option_before_a_double_dash() -> None:
    assert requested_format(["--format", "json", "status"]) is OutputFormat.JSON
    assert requested_format(["status", "--format=json"]) is OutputFormat.JSON
    assert requested_format(["--format=json", "status", "--format", "table"]) is OutputFormat.TABLE
    assert requested_format(["set", "--", "--format", "json"]) is OutputFormat.TABLE
    assert requested_format(["status", "--format", "yaml"]) is OutputFormat.TABLE  # typer refuses it
    assert requested_format(["status", "--format"]) is OutputFormat.TABLE
