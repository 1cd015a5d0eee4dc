"""`kvctl hba` and `kvctl jwt-key` (superuser only): the node's host rules and its token
signing keys.

Host rules work like PostgreSQL's pg_hba.conf: the node checks them in order and the
first rule that matches a client's address and user decides. They are numbered from 0,
as the node numbers them in its messages. `hba add` and `hba remove` read the rules with
their version and write them back with If-Match, so a change someone made meanwhile
makes them fail instead of being overwritten. The node judges the rules themselves
(CIDRs included); kvctl only warns about a rule that an earlier one hides.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Annotated, Any

import typer

from ..client import KvClient, KvctlError
from ..output import OutputFormat, emit_json, emit_line, emit_table, utc_text
from .options import FormatOption, TokenOption, UrlOption, connect, output_format

# The node takes at most 1000 rules; a file larger than this is not a rule file.
HBA_FILE_MAX_BYTES = 1 << 20
HBA_HEADERS = ("#", "ACTION", "CIDR", "USER", "ROLE", "COMMENT")
JWT_KEY_HEADERS = ("KID", "CURRENT", "CREATED", "RETIRED")
DROP_OLD_WARNING = (
    "kvctl: every login token issued before now is invalid, yours too if kvctl used one: "
    "run kvctl login again (API keys keep working)"
)
ANY_NAME = "all"


class HbaAction(StrEnum):
    ALLOW = "allow"
    REJECT = "reject"


ForceOption = Annotated[
    bool, typer.Option("--force", help="Apply even if the new rules reject you yourself (you lose access).")
]

hba_app = typer.Typer(
    no_args_is_help=True, help="List and change the host rules: who may connect from where (superuser only)."
)
jwt_key_app = typer.Typer(no_args_is_help=True, help="List and rotate the token signing keys (superuser only).")


# -- host rules ---------------------------------------------------------------------------


@hba_app.command("list")
def hba_list(ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None) -> None:
    """List the host rules in the order the node checks them; the first that matches decides."""
    with connect(ctx, url, token) as client:
        document = client.get_hba()
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(document)
    else:
        emit_table(HBA_HEADERS, [hba_row(index, rule) for index, rule in enumerate(document["rules"])])


@hba_app.command("add")
def hba_add(
    ctx: typer.Context,
    action: Annotated[HbaAction, typer.Option("--action", help="allow or reject.")],
    cidr: Annotated[str, typer.Option("--cidr", help="Client network, such as 10.0.0.0/8 or fd00::/8.")],
    user: Annotated[str | None, typer.Option("--user", help="Only this user. Default: all users.")] = None,
    role: Annotated[str | None, typer.Option("--role", help="Only members of this role. Default: all.")] = None,
    comment: Annotated[str | None, typer.Option("--comment", help="Why the rule is there.")] = None,
    position: Annotated[
        int | None,
        typer.Option(
            "--position",
            metavar="N",
            min=0,
            help="Insert as rule N; 0 is first. Default: append at the end, where a broader rule before it "
            "(such as the initial allow-all) hides it.",
        ),
    ] = None,
    force: ForceOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Add a host rule. It fails, changing nothing, if someone else changes the rules meanwhile.

    The first rule that matches decides, so specific rules go before broad ones, as in pg_hba.conf.
    """
    if user is not None and role is not None:
        raise typer.BadParameter("--user and --role exclude each other")
    fields = {"action": action.value, "cidr": cidr, "user": user, "role": role, "comment": comment}
    rule = {name: value for name, value in fields.items() if value is not None}
    with connect(ctx, url, token) as client:
        current = client.get_hba()
        rules = list(current["rules"])
        index = len(rules) if position is None else position
        if index > len(rules):
            raise KvctlError(f"--position {index} is past the end: there are {len(rules)} host rules")
        rules.insert(index, rule)
        document = _put_rules(client, rules, current.get("version"), force)
    _emit_change(ctx, output, document, f"added host rule {index}: {rule_text(document['rules'][index])}")
    _warn_hidden(document["rules"], [index], hint=True)


@hba_app.command("remove")
def hba_remove(
    ctx: typer.Context,
    number: Annotated[int, typer.Argument(metavar="N", min=0, help="The rule's # in `kvctl hba list`.")],
    force: ForceOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Remove host rule N. It fails, changing nothing, if someone else changes the rules meanwhile."""
    with connect(ctx, url, token) as client:
        current = client.get_hba()
        rules = list(current["rules"])
        if number >= len(rules):
            raise KvctlError(f"there is no host rule {number}: there are {len(rules)}")
        removed = rules.pop(number)
        document = _put_rules(client, rules, current.get("version"), force)
    _emit_change(ctx, output, document, f"removed host rule {number}: {rule_text(removed)}")


@hba_app.command("set")
def hba_set(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE", help="A JSON file, or - to read stdin.")],
    force: ForceOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Replace the host rules with a JSON file's: a list of rules, or {"rules": [...]}.

    A "version" beside the rules, as `kvctl hba list --format json` prints it, makes the change conditional:
    it fails, changing nothing, if the rules changed since.
    """
    source = "stdin" if file == "-" else file
    try:
        rules, version = parse_rules_file(_read_rules_file(file))
    except OSError as exc:
        raise KvctlError(f"cannot read {source}: {exc.strerror}") from None
    except ValueError as exc:
        raise KvctlError(f"{source}: {exc}") from None
    with connect(ctx, url, token) as client:
        document = _put_rules(client, rules, version, force)
    _emit_change(ctx, output, document, f"set {len(document['rules'])} host rules")
    _warn_hidden(document["rules"], range(len(document["rules"])), hint=False)


def _read_rules_file(file: str) -> bytes:
    if file == "-":
        data = sys.stdin.buffer.read(HBA_FILE_MAX_BYTES + 1)
    else:
        with open(file, "rb") as stream:
            data = stream.read(HBA_FILE_MAX_BYTES + 1)
    if len(data) > HBA_FILE_MAX_BYTES:
        raise ValueError(f"larger than {HBA_FILE_MAX_BYTES} bytes, so not a host rule file")
    return data


def _put_rules(client: KvClient, rules: list[Any], version: int | None, force: bool) -> dict[str, Any]:
    try:
        return client.put_hba(rules, version, force)
    except KvctlError as error:
        # The node's lockout refusal names its HTTP switch; an operator needs the flag.
        raise KvctlError(error.message.replace("send ?force=true", "use --force"), error.code) from None


def _emit_change(ctx: typer.Context, output: OutputFormat | None, document: dict[str, Any], summary: str) -> None:
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(document)
    else:
        emit_line(f"{summary}; version={document.get('version')}")


def _warn_hidden(rules: Sequence[dict[str, Any]], indexes: Iterable[int], hint: bool) -> None:
    for index in indexes:
        earlier = hiding_rule(rules, index)
        if earlier is None:
            continue
        advice = f"; --position {earlier} puts a rule before it" if hint else ""
        print(
            f"kvctl: host rule {index} never decides: rule {earlier} ({rule_text(rules[earlier])}) comes first "
            f"and matches every client it would{advice}",
            file=sys.stderr,
            flush=True,
        )


def parse_rules_file(data: bytes) -> tuple[list[Any], int | None]:
    """The rules of a rules file and the version it names (None: none). The node judges the rules."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if isinstance(document, list):
        return document, None
    if isinstance(document, dict) and isinstance(document.get("rules"), list) and set(document) <= {"rules", "version"}:
        version = document.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise ValueError(f'"version" must be a whole number or null, not {version!r}')
        return document["rules"], version
    raise ValueError('expected a list of host rules or {"rules": [...], "version"?: N}')


def hiding_rule(rules: Sequence[dict[str, Any]], index: int) -> int | None:
    """The first rule before `index` that matches every client rule `index` matches (so
    rule `index` never decides), or None. Works on rules as the node stores them."""
    rule = rules[index]
    network = ipaddress.ip_network(rule["cidr"])
    for earlier_index, earlier in enumerate(rules[:index]):
        earlier_network = ipaddress.ip_network(earlier["cidr"])
        if (
            earlier_network.version == network.version
            and network.subnet_of(earlier_network)  # type: ignore[arg-type]  # same version, checked above
            and earlier.get("user") in (None, rule.get("user"))
            and earlier.get("role") in (None, rule.get("role"))
        ):
            return earlier_index
    return None


def hba_row(index: int, rule: dict[str, Any]) -> tuple[object, ...]:
    """# ACTION CIDR USER ROLE COMMENT."""
    return (
        index,
        rule["action"],
        rule["cidr"],
        rule.get("user") or ANY_NAME,
        rule.get("role") or ANY_NAME,
        rule.get("comment"),
    )


def rule_text(rule: dict[str, Any]) -> str:
    """`reject 10.0.0.0/8 user=all role=app`: what a rule matches, in one line."""
    user, role = rule.get("user") or ANY_NAME, rule.get("role") or ANY_NAME
    return f"{rule['action']} {rule['cidr']} user={user} role={role}"


# -- signing keys -------------------------------------------------------------------------


@jwt_key_app.command("list")
def jwt_key_list(
    ctx: typer.Context, url: UrlOption = None, token: TokenOption = None, output: FormatOption = None
) -> None:
    """List the token signing keys, newest first (never their secrets)."""
    with connect(ctx, url, token) as client:
        document = client.list_jwt_keys()
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(document)
    else:
        emit_table(JWT_KEY_HEADERS, [jwt_key_row(key) for key in document["keys"]])


@jwt_key_app.command("rotate")
def jwt_key_rotate(
    ctx: typer.Context,
    drop_old: Annotated[
        bool,
        typer.Option(
            "--drop-old",
            help="Also drop every older key at once: every login token stops working (for a leaked secret).",
        ),
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = None,
) -> None:
    """Sign new tokens with a new key; tokens signed with older keys stay valid until they expire."""
    with connect(ctx, url, token) as client:
        document = client.rotate_jwt_key(drop_old)
    if output_format(ctx, output) is OutputFormat.JSON:
        emit_json(document)
    elif drop_old:
        emit_line(f"rotated to signing key {document['current']}; dropped every older key")
    else:
        older = len(document["keys"]) - 1
        keys_text = "1 older key" if older == 1 else f"{older} older keys"
        emit_line(f"rotated to signing key {document['current']}; tokens of {keys_text} stay valid until they expire")
    if drop_old:
        print(DROP_OLD_WARNING, file=sys.stderr, flush=True)


def jwt_key_row(key: dict[str, Any]) -> tuple[object, ...]:
    """KID CURRENT CREATED RETIRED."""
    return key["kid"], bool(key.get("current")), _ms_text(key.get("created_at_ms")), _ms_text(key.get("retired_at_ms"))


def _ms_text(epoch_ms: int | None) -> str | None:
    return utc_text(epoch_ms / 1000) if epoch_ms is not None else None
