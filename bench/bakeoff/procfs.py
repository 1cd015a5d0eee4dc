"""What the server under test and the rest of the machine use, read from /proc (Linux only)."""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat fields after the command name (index 0 is field 3, 'state')."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2 :].split()


def session_pids(session: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``session``."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = proc_stat_fields(int(entry.name))
            if int(fields[3]) == session and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def session_footprint(session: int) -> tuple[int, int, float]:
    """(processes, threads, RSS MiB) of every process in the server's session."""
    page = os.sysconf("SC_PAGE_SIZE")
    processes = threads = rss = 0
    for pid in session_pids(session):
        with contextlib.suppress(OSError):
            threads += int(proc_stat_fields(pid)[17])
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            processes += 1
    return processes, threads, rss / 2**20


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (includes steal)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu_s(session: int) -> float:
    """CPU seconds of the server's session, this script and its reaped children (wrk)."""
    total = 0.0
    for pid in session_pids(session):
        with contextlib.suppress(OSError):
            utime, stime = proc_stat_fields(pid)[11:13]
            total += (int(utime) + int(stime)) / CLK_TCK
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total
