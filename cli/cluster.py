"""`make run`'s local cluster: one primary and two replicas of it, on 127.0.0.1.

    python -m kvstore.cli.cluster start [--data-dir run-data] [--port 8080]
    python -m kvstore.cli.cluster stop  [--data-dir run-data]

`start` runs p (the primary, on PORT), r1 and r2 (its replicas, on PORT+1 and PORT+2) as
kvstored children, each with its data directory DATA_DIR/<name> and its log
DATA_DIR/<name>.log, and every node names the other two as `--peers`. It stays in the
foreground until Ctrl-C or SIGTERM, then stops all three (SIGTERM, wait for their final
checkpoints). A later `start` restarts the same cluster from its data directories, and
whoever is primary by then (after a promotion) stays primary, and the replicas follow it:
a node's control file outranks the replicas' `KVSTORE_REPLICA_OF`. The superuser's and the replication user's passwords are made on
the first start and kept in DATA_DIR (mode 0600): the primary takes them only when it
creates its catalog, and the replicas need the replication one on every start. So is the
cluster key (DATA_DIR/cluster.key, see node/cluster_key.py), which every node is given as
`cluster_key_file`: the primary seals the token signing secrets with it, and the replicas
open them with it. A cluster made before there was one gets it on its next start (the
primary then seals the secrets its catalog holds in the clear).

`stop`, from another terminal, stops the cluster by the PIDs `start` recorded in
DATA_DIR/cluster.json, after checking each PID still runs what was recorded.

For development on one machine only (Linux: it reads /proc). It does not restart a node
that dies; it reports it and keeps the others running.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from kvstore.chaos.launcher import NodeLauncher
from kvstore.node import cluster_key
from kvstore.node.fsutil import atomic_write

PRIMARY_NAME = "p"
NODE_NAMES = (PRIMARY_NAME, "r1", "r2")
DEFAULT_DATA_DIR = Path("run-data")
DEFAULT_PORT = 8080
REPLICATION_USER = "replicator"
ADMIN_PASSWORD_FILE = "admin-password"
REPLICATION_PASSWORD_FILE = "replication-password"
CLUSTER_KEY_FILE = "cluster.key"
PIDS_FILE = "cluster.json"
DATA_DIR_MODE = 0o700
SECRET_FILE_MODE = 0o600
# A node's final checkpoint runs before it exits; a large store needs a while.
NODE_STOP_TIMEOUT_S = 60.0
LAUNCHER_STOP_TIMEOUT_S = NODE_STOP_TIMEOUT_S + 10.0
POLL_INTERVAL_S = 0.2
LOG_TAIL_LINES = 5
# What a recorded PID's command line must hold to still be ours (PIDs are reused).
LAUNCHER_MARKER = "kvstore.cli.cluster"

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
DataDirOption = Annotated[Path, typer.Option("--data-dir", help="Holds each node's data directory and log.")]


class ClusterError(Exception):
    """An operating error: printed as `cluster: <message>`, exit status 1."""


# -- start ----------------------------------------------------------------------------------


@app.command()
def start(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    port: Annotated[
        int, typer.Option("--port", min=1, max=65533, help="The primary's port; replicas take the next two.")
    ] = DEFAULT_PORT,
) -> None:
    """Start p, r1 and r2 and stay in the foreground; Ctrl-C or SIGTERM stops all three."""
    root = data_dir.resolve()
    _refuse_to_start_over(root)
    root.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    created = not any((root / name).exists() for name in NODE_NAMES)
    admin_password = _secret(root / ADMIN_PASSWORD_FILE, created, os.environ.get("KVSTORE_ADMIN_PASSWORD"))
    replication_password = _secret(root / REPLICATION_PASSWORD_FILE, created, None)
    key_file = root / CLUSTER_KEY_FILE
    if not key_file.exists():
        atomic_write(key_file, (cluster_key.generate_text() + "\n").encode(), SECRET_FILE_MODE)
    nodes = plan_nodes(root, port, admin_password, replication_password)
    # Ctrl-C and `make stop` end it the same way, even where SIGINT came ignored (a shell's `cmd &`):
    # the nodes stop on SIGINT regardless, so the launcher must too.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    failed = False
    try:
        for node in nodes:
            node.spawn()
            _record_pids(root, nodes)
        # All at once: whichever node is primary now, the others wait for it on their own.
        failed = not all(_wait_ready(node) for node in nodes)
        if not failed:
            _print_started(root, nodes, admin_password if created else None)
            _supervise(nodes)
    except KeyboardInterrupt:
        pass
    finally:
        # The nodes must be stopped even if Ctrl-C is pressed again; their own wait is bounded.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        codes = _stop_nodes(nodes)
        (root / PIDS_FILE).unlink(missing_ok=True)
    if failed or any(code != 0 for code in codes):
        raise typer.Exit(1)


def plan_nodes(root: Path, port: int, admin_password: str, replication_password: str) -> list[NodeLauncher]:
    urls = {name: f"http://127.0.0.1:{port + index}" for index, name in enumerate(NODE_NAMES)}
    env = {
        "KVSTORE_REPLICATION_USER": REPLICATION_USER,
        "KVSTORE_REPLICATION_PASSWORD": replication_password,
        "KVSTORE_CLUSTER_KEY_FILE": str(root / CLUSTER_KEY_FILE),
    }
    nodes = []
    for index, name in enumerate(NODE_NAMES):
        args = ["--name", name, "--peers", ",".join(url for other, url in urls.items() if other != name)]
        # In the environment, not a flag: a flag would outrank the primary control records
        # after a promotion; the environment only names it for a new replica.
        node_env = env if name == PRIMARY_NAME else {**env, "KVSTORE_REPLICA_OF": urls[PRIMARY_NAME]}
        nodes.append(NodeLauncher(root / name, admin_password, env=node_env, args=args, port=port + index))
    return nodes


def _refuse_to_start_over(root: Path) -> None:
    if (root / "control").exists():
        raise ClusterError(
            f"{root} is a single node's data directory (from an older make run); move it away or remove it"
        )
    running = _live_recorded(root)
    if running:
        pids = ", ".join(str(pid) for pid in running)
        raise ClusterError(f"a cluster from {root} is still running (PIDs {pids}); stop it first (make stop)")


def _secret(path: Path, created: bool, given: str | None) -> str:
    """The password kept in `path`; on a new cluster made from `given`, else at random."""
    if path.exists():
        return path.read_text().strip()
    if not created:
        raise ClusterError(
            f"{path} is missing, but the nodes in {path.parent} were created with the password it held; "
            f"restore it, or remove {path.parent} to start afresh"
        )
    password = given or secrets.token_urlsafe(18)
    atomic_write(path, (password + "\n").encode(), SECRET_FILE_MODE)
    return password


def _wait_ready(node: NodeLauncher) -> bool:
    try:
        node.wait_ready()
        return True
    except (RuntimeError, TimeoutError) as error:  # it exited, or never got ready
        why = str(error).splitlines()[0].rstrip(":")
        tail = node.log().splitlines()[-LOG_TAIL_LINES:]
        print(
            f"cluster: {node.data_dir.name} did not start ({why}); the end of {os.path.relpath(node.log_path)}:",
            *tail,
            sep="\n  ",
            file=sys.stderr,
            flush=True,
        )
        return False


def _print_started(root: Path, nodes: list[NodeLauncher], new_admin_password: str | None) -> None:
    kvctl_path = Path(sys.executable).parent / "kvctl"
    kvctl = os.path.relpath(kvctl_path) if kvctl_path.exists() else "kvctl"
    lines = [f"cluster: up; data and logs (<name>.log) in {os.path.relpath(root)}"]
    pids = _pids(nodes)
    lines += [f"  {node.data_dir.name:<3} {node.url}  pid {pids[node.data_dir.name]}" for node in nodes]
    if new_admin_password is not None:
        lines.append(f"created superuser admin with password {new_admin_password}")
    lines += [
        f"admin's password is in {os.path.relpath(root / ADMIN_PASSWORD_FILE)} (mode 0600); log in with:",
        f"  {kvctl} login --url {nodes[0].url} --user admin",
        f"  {kvctl} status " + " ".join(f"--url {node.url}" for node in nodes),
        "Ctrl-C here (or make stop in another terminal) stops all three.",
    ]
    print("\n".join(lines), flush=True)


def _supervise(nodes: list[NodeLauncher]) -> None:
    """Report nodes that exit on their own; return when none is left."""
    running = {node.data_dir.name: node for node in nodes}
    while running:
        time.sleep(POLL_INTERVAL_S)
        for name, node in list(running.items()):
            assert node.process is not None
            if node.process.poll() is not None:
                del running[name]
                print(
                    f"cluster: {name} exited with {node.process.returncode}; see {os.path.relpath(node.log_path)}",
                    file=sys.stderr,
                    flush=True,
                )
    print("cluster: no node is left running", file=sys.stderr, flush=True)


def _stop_nodes(nodes: list[NodeLauncher]) -> list[int]:
    """SIGTERM every node still running, then wait for all; one that does not stop is killed.
    Returns the exit codes of the nodes that were spawned."""
    spawned = {node.data_dir.name: node.process for node in nodes if node.process is not None}
    running = [name for name, process in spawned.items() if process.poll() is None]
    if running:
        print(f"cluster: stopping {', '.join(running)}", flush=True)
    for name in running:
        spawned[name].send_signal(signal.SIGTERM)
    deadline = time.monotonic() + NODE_STOP_TIMEOUT_S
    codes = {}
    for name, process in spawned.items():
        try:
            codes[name] = process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"cluster: {name} did not stop within {NODE_STOP_TIMEOUT_S:g} s; killing it", flush=True)
            process.kill()
            codes[name] = process.wait()
    if running:
        print(f"cluster: stopped (exit codes: {', '.join(f'{n} {c}' for n, c in codes.items())})", flush=True)
    return list(codes.values())


# -- the PID record -------------------------------------------------------------------------


def _pids(nodes: list[NodeLauncher]) -> dict[str, int]:
    return {node.data_dir.name: node.process.pid for node in nodes if node.process is not None}


def _record_pids(root: Path, nodes: list[NodeLauncher]) -> None:
    document = {"launcher": os.getpid(), "nodes": _pids(nodes)}
    atomic_write(root / PIDS_FILE, json.dumps(document, indent=2).encode() + b"\n", SECRET_FILE_MODE)


def _recorded(root: Path) -> list[tuple[int, str]]:
    """The recorded (PID, marker) pairs, the launcher first; none if nothing was recorded."""
    try:
        document = json.loads((root / PIDS_FILE).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:
        raise ClusterError(f"cannot read {root / PIDS_FILE}: {error}") from None
    try:
        nodes = [(int(pid), str(root / name)) for name, pid in document["nodes"].items()]
        return [(int(document["launcher"]), LAUNCHER_MARKER), *nodes]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ClusterError(f"{root / PIDS_FILE} is damaged; stop the processes it named by hand") from None


def _live_recorded(root: Path) -> list[int]:
    return [pid for pid, marker in _recorded(root) if _runs(pid, marker)]


def _runs(pid: int, marker: str) -> bool:
    """Whether `pid` is alive and `marker` is one of its arguments (a node's data directory, or
    the launcher's module name)."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False  # gone (a zombie's command line is empty, so it does not count either)
    return marker.encode() in arguments


# -- stop -----------------------------------------------------------------------------------


@app.command()
def stop(data_dir: DataDirOption = DEFAULT_DATA_DIR) -> None:
    """Stop the cluster started from DATA_DIR: its launcher, or the nodes if the launcher is gone."""
    root = data_dir.resolve()
    recorded = _recorded(root)
    if not recorded:
        print(f"cluster: nothing to stop (no {os.path.relpath(root / PIDS_FILE)})")
        return
    (launcher, _), *nodes = recorded
    if _runs(launcher, LAUNCHER_MARKER):
        os.kill(launcher, signal.SIGTERM)  # it stops its nodes and waits for them
        _wait_gone(launcher, LAUNCHER_MARKER, LAUNCHER_STOP_TIMEOUT_S)
    leftovers = [(pid, marker) for pid, marker in nodes if _runs(pid, marker)]
    for pid, _ in leftovers:  # the launcher died without stopping them
        os.kill(pid, signal.SIGTERM)
    for pid, marker in leftovers:
        _wait_gone(pid, marker, NODE_STOP_TIMEOUT_S)
    (root / PIDS_FILE).unlink(missing_ok=True)
    print("cluster: stopped")


def _wait_gone(pid: int, marker: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _runs(pid, marker):
        if time.monotonic() >= deadline:
            raise ClusterError(f"PID {pid} ({marker}) did not stop within {timeout_s:g} s")
        time.sleep(POLL_INTERVAL_S)


def main() -> None:
    try:
        app(prog_name="python -m kvstore.cli.cluster")
    except ClusterError as error:
        print(f"cluster: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
