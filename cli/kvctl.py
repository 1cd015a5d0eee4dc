"""`kvctl`: the operator's command line for a KVStore++ node.

This module assembles the app: the options that may come before any command, the
command groups (one module each in commands/) and the entry point. The HTTP client
(client.py), the login file and server resolution (credentials.py), printing
(output.py) and WAL records (walview.py) live beside it. Every command prints a table
for people or, with `--format json`, JSON for scripts. Any failure prints `kvctl:
<reason>` on stderr and exits 1; bad usage exits 2 (typer's usage errors).

`--url`, `--token` and `--format` may be given before the command (`kvctl --format
json status`) or after it (`kvctl status --format json`); after wins.
"""

from __future__ import annotations

import sys

import typer

from .client import KvctlError
from .commands import admin, apikeys, cluster, data, login, security, users, wal
from .commands.options import FormatOption, GlobalOptions, TokenOption, UrlOption

EXIT_FAILURE = 1

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Operate a KVStore++ node or cluster: keys, checkpoints, snapshots, status, failover, the WAL, users, roles, "
    "API keys, host rules and signing keys.",
)
# Unnamed groups add their commands at the top level; `kvctl --help` lists them in this order.
app.add_typer(login.app)
app.add_typer(data.app)
app.add_typer(admin.app)
app.add_typer(cluster.app)
app.add_typer(users.app)
app.add_typer(admin.snapshot_app, name="snapshot")
app.add_typer(wal.app, name="wal")
app.add_typer(users.user_app, name="user")
app.add_typer(users.role_app, name="role")
app.add_typer(apikeys.app, name="apikey")
app.add_typer(security.hba_app, name="hba")
app.add_typer(security.jwt_key_app, name="jwt-key")


def main() -> None:
    try:
        app(prog_name="kvctl")
    except KvctlError as error:
        print(f"kvctl: {error.message}", file=sys.stderr)
        sys.exit(EXIT_FAILURE)


@app.callback()
def root(ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None) -> None:
    ctx.obj = GlobalOptions(url, token, output)
