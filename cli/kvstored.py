"""`kvstored`: start one node.

Settings come from flags, then `KVSTORE_*` environment variables, then the data
directory's config.toml. Exit codes (for supervisors such as systemd):
0 clean shutdown, 1 unexpected failure, 2 bad configuration, 3 data directory in use,
4 data corruption (do not restart in a loop: an operator must look).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvloop

from kvstore.node.archive.store import ArchiveError
from kvstore.node.config import ConfigError, load_settings
from kvstore.node.control import ControlError
from kvstore.node.datadir import DataDirError, DataDirInUse
from kvstore.node.logs import setup_logging
from kvstore.node.server import Node
from kvstore.node.snapshot import SnapshotError
from kvstore.node.wal.policy import FsyncPolicy
from kvstore.node.wal.reader import WalCorruption

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_DATADIR_IN_USE = 3
EXIT_CORRUPTION = 4

log = logging.getLogger("kvstored")
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def kvstored(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (created and initialised if empty).")] = None,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT to serve HTTP on.")] = None,
    fsync: Annotated[FsyncPolicy | None, typer.Option(help="Durability: always, interval or off.")] = None,
    config: Annotated[Path | None, typer.Option(help="Config file (default: DATA_DIR/config.toml).")] = None,
    admin_password_file: Annotated[
        Path | None, typer.Option(help="File holding the initial superuser password (first start only).")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
    name: Annotated[
        str | None, typer.Option(help="Node name: its slot name on a primary (default kvstored-PORT).")
    ] = None,
    replica_of: Annotated[str | None, typer.Option(help="Primary URL: run as its replica.")] = None,
    peers: Annotated[str | None, typer.Option(help="Other nodes' URLs, comma-separated (fencing).")] = None,
    restore_from: Annotated[
        str | None,
        typer.Option(
            help="Archive URL: a data directory that does not exist yet is first restored from its latest point."
        ),
    ] = None,
) -> None:
    """Run a KVStore++ node."""
    flags = {
        "data_dir": data_dir,
        "listen": listen,
        "fsync": fsync.value if fsync else None,
        "admin_password_file": admin_password_file,
        "log_level": log_level,
        "name": name,
        "replica_of": replica_of,
        "peers": peers,
        "restore_from": restore_from,
    }
    try:
        settings = load_settings({k: v for k, v in flags.items() if v is not None}, config_path=config)
    except ConfigError as error:
        typer.echo(f"kvstored: configuration error: {error}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    setup_logging(settings.log_level)
    node = Node(settings, replica_of_flag=replica_of)
    code = _serve(node)
    if code == EXIT_OK and node.restart_requested:
        # Rejoin or a new base backup: start over as this same process (a supervisor keeps
        # its PID); every descriptor, the data directory lock included, closes on exec.
        log.info("restarting", extra={"reason": node.restart_requested})
        os.execv(sys.executable, sys.orig_argv)
    raise typer.Exit(code)


def _serve(node: Node) -> int:
    try:
        uvloop.run(node.run())
    except DataDirInUse as error:
        log.error(str(error))
        return EXIT_DATADIR_IN_USE
    except (DataDirError, ConfigError) as error:
        log.error(str(error))
        return EXIT_CONFIG
    except (WalCorruption, SnapshotError, ControlError) as error:
        log.critical(
            f"refusing to start: {error}; run `kvctl wal verify --data-dir DIR` and see docs/recovery.md (do not restart in a loop)"
        )
        return EXIT_CORRUPTION
    except ArchiveError as error:
        log.error(f"cannot start: restoring from the archive failed: {error}")
        return EXIT_FAILURE
    except OSError as error:
        log.error(f"cannot start: {error}")
        return EXIT_FAILURE
    except Exception:
        log.exception("kvstored failed")
        return EXIT_FAILURE
    return EXIT_OK


def main() -> None:
    app()
