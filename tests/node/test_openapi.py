"""The OpenAPI document is complete and true.

Complete: valid OpenAPI 3.1, every route of the node's own route tables is in it, and
nothing else. True: schemathesis runs every check of its against a real node (a request the
document calls valid is accepted, one it calls invalid refused, every status, header and body
as documented); tests/support/schemathesis.toml and tests/support/schemathesis_hooks.py say what it is told
beyond the document, and why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from openapi_spec_validator import validate

from kvstore.node.api import openapi
from kvstore.node.api.app import App, NodeApi
from kvstore.node.config import Settings
from support.harness import CHEAP_HASHING, NodeProcess
from support.schemathesis_hooks import RUN_KEY, RUN_USER

# The schemathesis subprocess imports its hooks as `support.schemathesis_hooks` from here.
TESTS = Path(__file__).resolve().parents[1]
# Limits other than the defaults, small enough that schemathesis reaches every bound.
LIMITS = {
    "max_key_bytes": 256,
    "max_value_bytes": 4096,
    "max_body_bytes": 65536,
    "max_txn_ops": 50,
    "max_scan_limit": 500,
}
SEED = 20261201
EXAMPLES_PER_OPERATION = 20
# Operations left out of the run, each for a reason of its own; every other one runs every check.
NOT_FUZZED = {
    # It makes the node connect to the URL in its body: a fuzzer must not aim a node at other
    # hosts (a separate issue hardens it), and a good URL would turn the node into a replica.
    "POST /v1/admin/rejoin": "contacts the URL it is given",
    # On a primary it is a 409 every time; it belongs to the failover tests, which have replicas.
    "POST /v1/admin/promote": "failover, tested with replicas",
    # It writes where its URL says: a valid file:// URL is any directory on the node's disk, an
    # s3:// one any host. tests/node/test_snapshot_export.py tests it, bad URLs included.
    "POST /v1/admin/snapshots/export": "writes where the URL in its body says",
    # A stream that succeeds never ends (schemathesis reads whole responses), and a replica on a
    # newer timeline than the node's proves a promotion elsewhere, so the node fences itself.
    "GET /v1/replication/stream": "endless, and a newer timeline fences the node",
    "GET /v1/watch": "endless: follows the WAL until the client leaves",
    # Every valid request samples the node for 1 to 60 s, one at a time (409 meanwhile):
    # tests/node/test_profile.py tests it, bad parameters included.
    "GET /v1/admin/profile": "each valid request takes seconds, one at a time",
    "POST /v1/replication/feedback": "a newer timeline fences the node",
    # Rules that reject the caller are refused (400 would_lock_out) unless ?force=true, which
    # locks the run out: whether rules admit the caller is no schema's to say.
    "PUT /v1/admin/hba": "valid rules may lock the run out",
    # A valid policy may cost 4 GiB and 20 passes per password hash (every later user the run
    # makes would take minutes) or raise password_min_length above the document's.
    "PATCH /v1/admin/settings/auth": "valid policies make later requests cost minutes",
    # A superuser's raw writes to the catalogs (a repair tool) skip the admin API's guards by
    # design: they could delete the run's own user. The same document checks run through the
    # admin API.
    "PUT /v1/kv/_sys.{catalog_key}": "raw catalog writes skip the admin API's guards",
    "DELETE /v1/kv/_sys.{catalog_key}": "raw catalog writes skip the admin API's guards",
}


def _settings() -> Settings:
    return Settings(**LIMITS)  # type: ignore[arg-type]


def test_document_is_valid_openapi_with_every_route_and_nothing_else() -> None:
    settings = _settings()
    document = openapi.spec(settings, settings.initial_auth_policy)
    validate(document)  # OpenAPI 3.1, every path parameter declared
    # The routes are built without reading the node: settings are all a route table needs.
    served = set(App(cast(NodeApi, SimpleNamespace(settings=settings))).route_table())
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item if method != "parameters"
    }
    assert served - documented == set(), "routes the document lacks"
    # The catalog keys are keys too: their operations are the data path's, documented apart.
    catalog = {(method, "/v1/kv/{key}") for method, path in documented if path == "/v1/kv/_sys.{catalog_key}"}
    assert {(method, "/v1/kv/{key}") for method in ("GET", "PUT", "DELETE")} == catalog
    assert documented - served == {(method, "/v1/kv/_sys.{catalog_key}") for method, _ in catalog}


def test_document_states_this_nodes_limits() -> None:
    settings = _settings()
    paths = openapi.spec(settings, settings.initial_auth_policy)["paths"]
    put = paths["/v1/kv/{key}"]["put"]
    key = next(p for p in put["parameters"] if p["name"] == "key")["schema"]
    # ASCII keys of max_key_bytes characters, any text of a quarter of that (4-byte characters).
    assert [branch["maxLength"] for branch in key["anyOf"]] == [256, 128, 85, 64]
    body = put["requestBody"]["content"]["application/octet-stream"]["schema"]
    assert body["maxLength"] == 4096
    ops = paths["/v1/txn"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["ops"]
    assert ops["maxItems"] == 50
    limit = next(p for p in paths["/v1/kv"]["get"]["parameters"] if p["name"] == "limit")["schema"]
    assert limit["maximum"] == 500


def _run_identity(node: NodeProcess) -> str:
    """An API key of a superuser of the run's own: no signing key rotation or password change
    ends it, and the hooks keep schemathesis from deleting, locking or demoting its user."""
    with node.client() as admin:
        user = {"name": RUN_USER, "password": "schemathesis-runner", "roles": ["admin"]}
        admin.post("/v1/admin/users", json=user).raise_for_status()
        made = admin.post("/v1/admin/apikeys", json={"name": RUN_KEY, "user": RUN_USER})
        made.raise_for_status()
        return str(made.json()["token"])


def _schemathesis(node: NodeProcess, token: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    command: list[str] = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(TESTS / "support" / "schemathesis.toml"),
        "run",
        f"{node.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--generation-database",
        "none",  # the same cases every run: nothing replayed from an earlier one
        "--no-color",
    ]
    for operation in NOT_FUZZED:
        command += ["--exclude-name", operation]
    env: dict[str, Any] = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.timeout(660)
def test_schemathesis_finds_nothing(node_factory: Any, tmp_path: Path) -> None:
    env = {**CHEAP_HASHING, **{f"KVSTORE_{name.upper()}": str(value) for name, value in LIMITS.items()}}
    node = node_factory(env=env).start()
    result = _schemathesis(node, _run_identity(node), tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-30_000:]
    assert "Tested: " in output and " passed" in output, output[-5_000:]
