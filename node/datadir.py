"""The data directory: its layout, the exclusive lock, and creating a new one (initdb).

data/WAL/  data/base/  data/timelines/  data/log/  data/control  data/config.toml
data/kvstored.pid   held with an exclusive flock while a node runs (postmaster.pid)
data/replication/   a primary's slots;  data/diverged/   what a rejoin moved aside, kept
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from .control import STATE_SHUT_DOWN, Control, write_control
from .fsutil import PRIVATE_DIR_MODE, fsync_dir, private_dirs

log = logging.getLogger(__name__)

LOCK_FILE = "kvstored.pid"


class DataDirError(Exception):
    pass


class DataDirInUse(DataDirError):
    """Another live kvstored holds the data directory's lock."""


@dataclass(frozen=True, slots=True)
class DataDir:
    root: Path

    @property
    def wal(self) -> Path:
        return self.root / "WAL"

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def timelines(self) -> Path:
        return self.root / "timelines"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def control(self) -> Path:
        return self.root / "control"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    def exists(self) -> bool:
        return self.control.exists()


class DataDirLock:
    """An exclusive flock on `kvstored.pid`; the kernel drops it when the process dies."""

    def __init__(self, datadir: DataDir) -> None:
        self.path = datadir.root / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"data directory {self.path.parent} is in use by another kvstored (pid {holder}); "
                "stop it first, or use another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def make_root(datadir: DataDir) -> None:
    """The data directory itself, created 0700 if missing. One that others may enter (created by
    an older version, or by hand) is made private, as PostgreSQL insists (0750 is allowed too:
    a group that only reads, for backups); it holds password hashes and signing keys."""
    try:
        private_dirs(datadir.root)
        if not datadir.root.is_dir():
            raise FileExistsError
    except FileExistsError:
        raise DataDirError(
            f"data directory {datadir.root} is not a directory; give --data-dir a directory (created if missing)"
        ) from None
    except NotADirectoryError:
        raise DataDirError(f"data directory {datadir.root} cannot be created: part of its path is a file") from None
    mode = stat.S_IMODE(datadir.root.stat().st_mode)
    if mode & 0o027:  # group may write, or others may do anything
        try:
            datadir.root.chmod(PRIVATE_DIR_MODE)
        except PermissionError:
            raise DataDirError(
                f"data directory {datadir.root} has mode {mode:04o} and this user cannot change it; "
                f"run chmod 700 {datadir.root}"
            ) from None
        log.warning("data directory made private", extra={"data_dir": str(datadir.root), "was": f"{mode:04o}"})


def create_layout(datadir: DataDir) -> None:
    """The folders of a new data directory, refusing to mix with unknown files."""
    if datadir.exists():
        raise DataDirError(f"{datadir.root} already holds a data directory")
    private_dirs(datadir.root)
    folders = (datadir.wal, datadir.base, datadir.timelines, datadir.log)
    known = {LOCK_FILE, "config.toml", *(folder.name for folder in folders)}
    leftovers = [p.name for p in datadir.root.iterdir() if p.name not in known]
    # An interrupted base backup leaves its folders, at most with a hidden partial download.
    leftovers += [
        f"{folder.name}/{p.name}"
        for folder in (datadir.wal, datadir.base)
        if folder.is_dir()
        for p in folder.iterdir()
        if not p.name.startswith(".")
    ]
    if leftovers:
        raise DataDirError(
            f"{datadir.root} is not empty ({', '.join(sorted(leftovers)[:5])}) and holds no control file; "
            "refusing to initialise over unknown files"
        )
    for folder in folders:
        folder.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)


def initdb(datadir: DataDir) -> Control:
    """Lay out an empty data directory for a new primary. The node bootstraps the catalog itself."""
    create_layout(datadir)
    # Like PostgreSQL's: creation time in the high bits, randomness in the low ones.
    system_identifier = (int(time.time()) << 32) | secrets.randbits(32)
    control = Control(
        system_identifier=system_identifier,
        timeline=1,
        redo_lsn=0,
        snapshot=None,
        checkpoint_at_ms=0,
        state=STATE_SHUT_DOWN,
    )
    write_control(datadir.control, control)
    fsync_dir(datadir.root)
    return control
