"""Running wrk (Debian's package) and reading its report; Lua scripts for our request shapes."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse(output: str) -> WrkResult:
    """requests/s, p50/p99/max latency and error counts from `wrk --latency` output."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{output}")
        return match

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests_per_s=float(find(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=_to_ms(find(r"^\s+50%\s+(\S+)").group(1)),
        p99_ms=_to_ms(find(r"^\s+99%\s+(\S+)").group(1)),
        max_ms=_to_ms(find(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)").group(1)),
        requests=int(find(r"^\s+(\d+) requests in").group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def run(url: str, duration_s: float, connections: int, script: str | None = None, threads: int = 1) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (Debian package 'wrk'; `make system-deps` installs it)")
    whole_seconds = max(1, round(duration_s))  # wrk takes whole seconds only
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{whole_seconds}s", "--timeout", "5s", "--latency"]
    with tempfile.TemporaryDirectory() as folder:
        if script is not None:
            path = Path(folder) / "script.lua"
            path.write_text(script)
            command += ["-s", str(path)]
        completed = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    return parse(completed.stdout)


def lua_requests(
    method: str, path_prefix: str, key_count: int, body: str = "", headers: dict[str, str] | None = None
) -> str:
    """A wrk script sending METHOD path_prefix<n % key_count> with the given body and headers."""
    lines = [f'wrk.method = "{method}"']
    if body:
        lines.append(f"wrk.body = {_lua_string(body)}")
    for name, value in (headers or {}).items():
        lines.append(f'wrk.headers["{name}"] = {_lua_string(value)}')
    lines += ["counter = 0", "request = function()", "  counter = counter + 1"]
    lines += [f'  return wrk.format(nil, "{path_prefix}" .. (counter % {key_count}))', "end"]

    return "\n".join(lines) + "\n"


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"
