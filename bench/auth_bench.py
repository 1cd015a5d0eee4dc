"""What authorization costs on the data path: the same GET/PUT load as different principals, in one run.

    python -m bench.auth_bench [--duration 5] [--rounds 3] [--write]

A node has no "authorization off" switch (it must never be open), so "off" is the
superuser, whose checks stop at `superuser` (no grant or pattern is evaluated), and
"on" is a user whose role has 20 grants with the matching one last, once with a JWT
and once with an API key, under 20 host rules with the matching one last. The
principals take turns within each round, each round starting with the next one (wrk,
fsync=off so the disk does not hide CPU costs); the table shows each one's median.

It also times, in this process, exactly the per-request work authorization adds
(authenticate the cached header, host rule decision, grant check) next to the
superuser's, in microseconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import tempfile
import time
import timeit
from pathlib import Path

import httpx

from kvstore.chaos.launcher import NodeLauncher
from kvstore.node import catalog, signing_keys
from kvstore.node.audit import AuditLog
from kvstore.node.auth import Authenticator
from kvstore.node.auth_policy import AuthPolicy
from kvstore.node.catalog_rules import API_KEY_PREFIX, api_key_digest
from kvstore.node.catalog_store import CatalogStore
from kvstore.node.cluster_key import ClusterKey
from kvstore.node.engine import Engine
from kvstore.node.passwords import HashingPool, HashParameters, Passwords
from kvstore.node.store import Store

from . import wrk
from .paths import results_file

KEYS = 10_000
VALUE = "x" * 100
GRANTS = 20
HOST_RULES = 20
PASSWORD = "bench-password"
RESULTS_PATH = results_file("auth")

ROLE = {
    "name": "bench-app",
    "superuser": False,
    "grants": [{"actions": ["read"], "pattern": f"other{i}:*"} for i in range(GRANTS - 1)]
    + [{"actions": ["read", "write"], "pattern": "bench:*"}],
}
RULES = [{"action": "reject", "cidr": f"10.{i}.0.0/16"} for i in range(HOST_RULES - 1)] + [
    {"action": "allow", "cidr": "127.0.0.0/8"}
]


def _prepare(node: NodeLauncher) -> dict[str, str]:
    """Creates the restricted user, its API key and the host rules; returns a token per principal."""
    with httpx.Client(base_url=node.url, headers={"authorization": f"Bearer {node.token()}"}, timeout=30) as admin:
        admin.post("/v1/admin/roles", json=ROLE).raise_for_status()
        user = {"name": "app", "password": PASSWORD, "roles": ["bench-app"]}
        admin.post("/v1/admin/users", json=user).raise_for_status()
        key = admin.post("/v1/admin/apikeys", json={"name": "bench", "user": "app"}).json()["token"]
        admin.put("/v1/admin/hba", json={"rules": RULES}).raise_for_status()
        for start in range(0, KEYS, 500):
            ops = [{"op": "set", "key": f"bench:k{i}", "value": VALUE} for i in range(start, start + 500)]
            admin.post("/v1/txn", json={"ops": ops}).raise_for_status()
    login = httpx.post(f"{node.url}/v1/auth/login", json={"username": "app", "password": PASSWORD}, timeout=30)
    login.raise_for_status()
    return {"superuser (off)": node.token(), "role, JWT (on)": login.json()["token"], "role, API key (on)": key}


def bench_http(args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, list[float]]]:
    node = NodeLauncher(workdir / "node", PASSWORD, env={"KVSTORE_FSYNC": "off"})
    rates: dict[str, dict[str, list[float]]] = {}
    try:
        node.start()
        tokens = _prepare(node)
        names = list(tokens)
        for round_index in range(args.rounds):
            # Each round starts with another principal: the page cache's writeback and a growing
            # WAL slow later runs, and that must not be charged to whoever always goes last.
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                token = tokens[name]
                headers = {"Authorization": f"Bearer {token}"}
                for op, script in (
                    ("GET", wrk.lua_requests("GET", "/v1/kv/bench:k", KEYS, headers=headers)),
                    ("PUT", wrk.lua_requests("PUT", "/v1/kv/bench:k", KEYS, VALUE, headers)),
                ):
                    result = wrk.run(node.url, args.duration, args.connections, script)
                    if result.non_2xx or result.socket_errors:
                        raise RuntimeError(f"{name} {op}: {result.non_2xx} non-2xx, {result.socket_errors} errors")
                    rates.setdefault(name, {}).setdefault(op, []).append(result.requests_per_s)
    finally:
        node.close()
    return rates


def bench_in_process(workdir: Path) -> dict[str, float]:
    """Microseconds per request of authenticate + authorize, per principal."""
    store = Store()
    now_ms = int(time.time() * 1000)
    policy = AuthPolicy(password_hash_time_cost=1, password_hash_memory_kib=8, password_hash_parallelism=1)
    passwords = Passwords(HashParameters(time_cost=1, memory_kib=8, parallelism=1))
    sealer = ClusterKey(secrets.token_bytes(32))
    documents = catalog.bootstrap_documents(
        passwords.hash("x"), signing_keys.initial_document(sealer, now_ms), now_ms, policy
    )
    app = catalog.user_document("app", passwords.hash("x"), ["bench-app"], now_ms)
    documents += [
        (catalog.role_key("bench-app"), catalog.encode(ROLE)),
        (catalog.user_key("app"), catalog.encode(app)),
        (catalog.HBA_KEY, catalog.encode({"rules": RULES})),
    ]
    key_id, secret = "0123456789ab", "bench-secret"
    api_key = {
        "id": key_id,
        "name": "bench",
        "user": "app",
        "user_created_at_ms": now_ms,
        "cidrs": [],
        "expires_at": None,
        "created_at_ms": now_ms,
        "secret_sha256": api_key_digest(secret),
    }
    documents.append((catalog.apikey_key(key_id), catalog.encode(api_key)))
    store.bulk_load((key, (value, 1, now_ms, 0)) for key, value in documents)

    audit = AuditLog(workdir / "audit.jsonl", 1 << 20, 1)
    # Reads only: an engine with no WAL attached serves the catalog from the loaded store.
    auth = Authenticator(CatalogStore(Engine(store), 10_000), policy, audit, sealer, HashingPool(1, 0))
    headers = {
        "superuser (off)": "Bearer " + auth.issue_token("admin", 1)[0],
        "role, JWT (on)": "Bearer " + auth.issue_token("app", 1)[0],
        "role, API key (on)": f"Bearer {API_KEY_PREFIX}{key_id}_{secret}",
    }
    timings = {}
    for name, header in headers.items():

        def request(header: str = header) -> None:
            principal = auth.authenticate(header, "127.0.0.1")
            if not principal.can("read", "bench:k42"):
                raise AssertionError("the benchmark user must be allowed")

        request()
        count = 200_000
        timings[name] = min(timeit.repeat(request, number=count, repeat=5)) / count * 1e6
    return timings


def report(rates: dict[str, dict[str, list[float]]], micro: dict[str, float], args: argparse.Namespace) -> str:
    off = rates["superuser (off)"]
    lines = [
        "| principal | GET req/s | GET vs off | GET range | PUT req/s | PUT vs off | PUT range | in-process us |",
        "|---|---:|---:|---|---:|---:|---|---:|",
    ]
    for name, ops in rates.items():
        cells = []
        for op in ("GET", "PUT"):
            median = statistics.median(ops[op])
            span = f"{min(ops[op]):,.0f}-{max(ops[op]):,.0f}"
            cells += [f"{median:,.0f}", f"{median / statistics.median(off[op]):.3f}", span]
        lines.append(f"| {name} | {' | '.join(cells)} | {micro[name]:.2f} |")
    request_us = 1e6 / statistics.median(off["GET"])
    worst = max(micro.values()) - micro["superuser (off)"]
    header = (
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s, {args.rounds} rounds, turns rotating (median and range), "
        f"fsync=off, {GRANTS} grants and {HOST_RULES} host rules with the match last; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    micro_lines = [
        "",
        "in-process us: authenticate a cached header + host rule decision + grant check, per request.",
        f"Authorization adds at most {worst:.2f} us over the superuser's path: {worst / request_us:.1%} "
        f"of one GET's {request_us:.0f} us at the superuser's rate.",
    ]
    return "\n".join([header, "", *lines, *micro_lines]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS_PATH.name}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvbench-auth-") as folder:
        micro = bench_in_process(Path(folder))
        rates = bench_http(args, Path(folder))
    text = report(rates, micro, args)
    print(text)
    if args.write:
        RESULTS_PATH.write_text("# Authorization on the data path\n\n`python -m bench.auth_bench --write`\n\n" + text)


if __name__ == "__main__":
    main()
