"""A statistical profile of the event loop's thread, taken while the node keeps serving.

The loop runs on the process's main thread, where Python runs signal handlers: a CPU-time
interval timer (ITIMER_PROF) sends SIGPROF every SAMPLE_INTERVAL_S of the process's CPU time,
and the handler counts the main thread's stack at that moment. Chosen by measurement (README
"Profiling", bench/profile_overhead.py) over two others: a sampler thread reading
`sys._current_frames()` runs only where the loop lets go of the GIL, its wait for I/O, so
nearly every sample was uvloop's `Runner.run`; pyinstrument's C hook runs at every Python
call and return of the thread and cost 40-65 % of PUT throughput; this handler takes 13 us a
sample, 0.3 % of the CPU, and its cost is under the benchmark's noise.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections import defaultdict
from dataclasses import dataclass
from types import FrameType
from typing import Any

from .errors import Conflict, Unavailable

SAMPLE_INTERVAL_S = 0.005
SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
_SITE_PACKAGES = "/site-packages/"

# A frame as a profile names it: function, file, first line of the function.
Frame = tuple[str, str, int]
Stack = tuple[Frame, ...]  # outermost first


@dataclass(frozen=True, slots=True)
class Profile:
    counts: dict[Stack, int]  # samples that found this stack
    interval_s: float

    @property
    def samples(self) -> int:
        return sum(self.counts.values())

    def collapsed(self) -> bytes:
        """`frame;frame;frame count` lines, outermost frame first, counts in samples."""
        lines = [";".join(_label(frame) for frame in stack) + f" {n}" for stack, n in sorted(self.counts.items())]
        return "".join(line + "\n" for line in lines).encode()

    def speedscope(self, name: str) -> dict[str, Any]:
        """speedscope's file format: one sampled profile, weights in seconds of CPU time."""
        index: dict[Frame, int] = {}
        samples = [[index.setdefault(frame, len(index)) for frame in stack] for stack in self.counts]
        weights = [n * self.interval_s for n in self.counts.values()]
        return {
            "$schema": SPEEDSCOPE_SCHEMA,
            "exporter": "kvstore-plus-plus",
            "name": name,
            "activeProfileIndex": 0,
            "shared": {"frames": [{"name": function, "file": file, "line": line} for function, file, line in index]},
            "profiles": [
                {
                    "type": "sampled",
                    "name": name,
                    "unit": "seconds",
                    "startValue": 0,
                    "endValue": sum(weights),
                    "samples": samples,
                    "weights": weights,
                }
            ],
        }


def _label(frame: Frame) -> str:
    function, file, line = frame
    # `;` separates frames; readers take the count after the last space, so spaces may stay.
    return f"{function} ({file}:{line})".replace(";", ":")


def _stack(frame: FrameType | None) -> Stack:
    frames: list[Frame] = []
    while frame is not None:
        code = frame.f_code
        # An installed module's path from its package down: the same on every machine.
        frames.append((code.co_qualname, code.co_filename.rpartition(_SITE_PACKAGES)[2], code.co_firstlineno))
        frame = frame.f_back
    frames.reverse()
    return tuple(frames)


class Profiler:
    """One profile at a time: a second request while one runs is a 409, not a second timer."""

    def __init__(self) -> None:
        self._running = False

    async def profile_loop(self, seconds: float) -> Profile:
        """Sample the running event loop's thread, which must be the main thread, for `seconds`."""
        if self._running:
            raise Conflict("a profile is already running on this node; try again when it is done")
        if threading.current_thread() is not threading.main_thread():
            raise Unavailable("profiling needs the event loop on the main thread (kvstored runs it there)")
        self._running = True
        counts: defaultdict[Stack, int] = defaultdict(int)

        def on_sample(signum: int, frame: FrameType | None) -> None:
            counts[_stack(frame)] += 1

        signal.signal(signal.SIGPROF, on_sample)
        signal.siginterrupt(signal.SIGPROF, False)  # SA_RESTART: other threads' system calls go on
        signal.setitimer(signal.ITIMER_PROF, SAMPLE_INTERVAL_S, SAMPLE_INTERVAL_S)
        try:
            await asyncio.sleep(seconds)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            # Ignored, not the default (which ends the process): a SIGPROF the timer raised just
            # before it stopped may still be on its way to a thread busy in a system call.
            signal.signal(signal.SIGPROF, signal.SIG_IGN)
            self._running = False
        return Profile(dict(counts), SAMPLE_INTERVAL_S)
