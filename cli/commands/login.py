"""`kvctl login`: exchange a password for a token and keep it in the login file."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ..client import KvClient, KvctlError
from ..credentials import Login, config_path, describe_expiry, load_login, resolve, save_login
from ..output import OutputFormat, emit_json, emit_line
from .options import FormatOption, UrlOption, output_format

app = typer.Typer()  # added to kvctl without a name: its commands are top-level ones


@app.command()
def login(
    ctx: typer.Context,
    url: UrlOption = None,
    user: Annotated[str, typer.Option("--user", help="User name.")] = "admin",
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from the first line of stdin (done anyway when stdin is not a terminal).",
        ),
    ] = False,
    output: FormatOption = None,
) -> None:
    """Log in and keep the token in the login file ($KVCTL_CONFIG or ~/.config/kvctl/config.json)."""
    path = config_path(os.environ)
    try:
        previous = load_login(path)
    except KvctlError:
        previous = None  # a damaged login file is about to be replaced
    target = resolve(url or ctx.obj.url, None, os.environ, previous)
    password = read_password(password_stdin)
    with KvClient(target.url) as client:
        answer = client.login(user, password)
    save_login(path, Login(target.url, str(answer["token"]), user, answer.get("expires_at")))
    expires = describe_expiry(answer.get("expires_at"))
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json({"url": target.url, "user": user, "expires_at": expires, "config": str(path)})
    else:
        emit_line(f"logged in as {user} at {target.url} (token expires {expires})")


def read_password(from_stdin: bool, confirm: bool = False) -> str:
    """Typed at the terminal without echo (twice with `confirm`), else the first line of stdin.
    A stdin that is not a terminal is read as if --password-stdin were given: getpass would warn
    that it cannot hide the input and would write its prompts among the command's output."""
    if not from_stdin and sys.stdin.isatty():
        return str(typer.prompt("Password", hide_input=True, confirmation_prompt=confirm))
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise KvctlError("no password on stdin (when stdin is not a terminal, its first line is the password)")
    return password
