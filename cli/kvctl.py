"""`kvctl`: the operator's command line for a KVStore++ node.

This module assembles the app: the options that may come before any command, the
command groups (one module each in commands/) and the entry point. The HTTP client
(client.py), the login file and server resolution (credentials.py), printing
(output.py) and WAL records (walview.py) live beside it. Every command prints a table
for people or, with `--format json`, JSON for scripts. Any failure prints `kvctl:
<reason>` on stderr and exits 1; bad usage exits 2 (typer's usage errors). With
`--format json` both are one JSON document on stderr instead, `{"error": {"code",
"message"}}`. A reader that stops reading (`kvctl keys | head`) ends kvctl quietly with 0.

`--url`, `--token` and `--format` may be given before the command (`kvctl --format
json status`) or after it (`kvctl status --format json`); after wins.
"""

from __future__ import annotations

import os
import sys

import typer

from .client import KvctlError
from .commands import admin, apikeys, audit, backup, cluster, data, login, security, settings, users, wal, watch
from .commands.options import FormatOption, GlobalOptions, TokenOption, UrlOption
from .output import OutputFormat, StdoutClosed, emit_error, requested_format

EXIT_OK = 0
EXIT_FAILURE = 1
ERROR_USAGE = "usage"
ERROR_ABORTED = "aborted"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Operate a KVStore++ node or cluster: keys, checkpoints, snapshots, status, failover, the WAL, users, roles, "
    "API keys, host rules, signing keys, the auth policy, backups and restores.",
)
# Unnamed groups add their commands at the top level; `kvctl --help` lists them in this order.
app.add_typer(login.app)
app.add_typer(data.app)
app.add_typer(watch.app)
app.add_typer(admin.app)
app.add_typer(cluster.app)
app.add_typer(backup.app)
app.add_typer(users.app)
app.add_typer(audit.app)
app.add_typer(admin.snapshot_app, name="snapshot")
app.add_typer(backup.backup_app, name="backup")
app.add_typer(wal.app, name="wal")
app.add_typer(users.user_app, name="user")
app.add_typer(users.role_app, name="role")
app.add_typer(apikeys.app, name="apikey")
app.add_typer(security.hba_app, name="hba")
app.add_typer(security.jwt_key_app, name="jwt-key")
app.add_typer(settings.app, name="settings")


def main() -> None:
    output = requested_format(sys.argv[1:])
    as_json = output is OutputFormat.JSON
    try:
        # Standalone, typer prints usage errors its own way and exits; for JSON they come back here.
        status = app(prog_name="kvctl", standalone_mode=not as_json)
    except typer.TyperException as error:  # what typer raises is bad usage: options, arguments, commands
        emit_error(ERROR_USAGE, error.format_message(), output)
        sys.exit(error.exit_code)
    except typer.Abort:  # end of input at a prompt
        emit_error(ERROR_ABORTED, "aborted", output)
        sys.exit(EXIT_FAILURE)
    except KvctlError as error:
        emit_error(error.code, error.message, output)
        sys.exit(EXIT_FAILURE)
    except StdoutClosed:
        # Python's recipe for SIGPIPE: point stdout at /dev/null, so flushing it at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OK)
    sys.exit(status if isinstance(status, int) else EXIT_OK)  # without standalone: an exit code, or None


@app.callback()
def root(ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None) -> None:
    ctx.obj = GlobalOptions(url, token, output)
