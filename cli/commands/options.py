"""What every kvctl command shares: the `--url`, `--token` and `--format` options, their
values given before the command (the root callback's `GlobalOptions`), and the client
they resolve to. It knows no command.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated

import typer

from ..client import KvClient
from ..credentials import Target, config_path, load_login, resolve
from ..output import OutputFormat

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Node URL. Default: $KVCTL_URL, then the login file, then http://127.0.0.1:8080."),
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Bearer token or API key. Default: $KVCTL_TOKEN, then the login file.")
]
FormatOption = Annotated[
    OutputFormat | None, typer.Option("--format", help="table (for people) or json (for scripts).")
]
UserOption = Annotated[str, typer.Option("--user", help="User name.")]


@dataclass(frozen=True, slots=True)
class GlobalOptions:
    url: str | None
    token: str | None
    output: OutputFormat | None


def output_format(ctx: typer.Context, output: OutputFormat | None) -> OutputFormat:
    return output or ctx.obj.output or OutputFormat.TABLE


def _target(ctx: typer.Context, url: str | None, token: str | None) -> Target:
    login = load_login(config_path(os.environ))
    return resolve(url or ctx.obj.url, token or ctx.obj.token, os.environ, login)


def connect(ctx: typer.Context, url: str | None, token: str | None) -> KvClient:
    target = _target(ctx, url, token)
    return KvClient(target.url, target.token, unauthorized_hint=target.hint)
