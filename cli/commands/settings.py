"""`kvctl settings get|set`: the cluster's auth policy, `_sys.settings:auth` (superuser only).

The policy lives in the catalog, so one change reaches every node of the cluster and takes
effect on the next request; the node settings of the same names only seed it at initdb.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..output import OutputFormat, emit_fields, emit_json
from .options import FormatOption, TokenOption, UrlOption, connect, output_format

app = typer.Typer(no_args_is_help=True, help="Show or change the cluster's auth policy (superuser only).")


@app.command("get")
def settings_get(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="One setting; all of them when left out.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Show the auth policy in force (password minimum, token lifetime, lockout, argon2 parameters)."""
    with connect(ctx, url, token) as client:
        document = client.get_auth_settings()
    settings = document["settings"]
    if name is not None and name not in settings:
        raise typer.BadParameter(f"no setting {name!r}; known: {', '.join(settings)}", param_hint="NAME")
    shown = settings if name is None else {name: settings[name]}
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json({"settings": shown, "version": document["version"]})
    else:
        emit_fields(list(shown.items()))


@app.command("set")
def settings_set(
    ctx: typer.Context,
    assignments: Annotated[list[str], typer.Argument(metavar="NAME=VALUE...", help="Such as token_ttl_s=900.")],
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Change auth settings for the whole cluster, effective on the next request."""
    changes = dict(parse_assignment(text) for text in assignments)
    with connect(ctx, url, token) as client:
        document = client.change_auth_settings(changes)
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(document)
    else:
        emit_fields([(name, document["settings"][name]) for name in changes])


def parse_assignment(text: str) -> tuple[str, int]:
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise typer.BadParameter(f"{text!r} is not NAME=VALUE", param_hint="NAME=VALUE")
    try:
        return name.strip(), int(raw)
    except ValueError:
        raise typer.BadParameter(f"{name.strip()}: {raw!r} is not an integer", param_hint="NAME=VALUE") from None
