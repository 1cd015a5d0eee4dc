"""A statistical profile of the event loop's thread, taken while the node keeps serving.

pyinstrument's sampler (its C `setstatprofile` hook) runs in the profiled thread itself, at
that thread's Python calls and returns once SAMPLE_INTERVAL_S has passed, so it sees the
loop's real stacks. A sampler thread reading `sys._current_frames()` was measured first and
is blind here: it runs only when the loop thread lets go of the GIL, which is almost always
in uvloop's wait for I/O, so nearly every sample was the same `Runner.run` frame (README
"Profiling"; bench/profile_overhead.py measures the cost of a profile). The stacks come out as
collapsed text (flamegraph.pl, speedscope) or speedscope's JSON file format.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from pyinstrument import Profiler as Sampler
from pyinstrument.frame_info import ATTRIBUTE_MARKER_CLASS_NAME, IDENTIFIER_SEP, parse_frame_info

from .errors import Conflict

SAMPLE_INTERVAL_S = 0.001  # pyinstrument's default
SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
_SITE_PACKAGES = "/site-packages/"

# A frame as a profile names it: function, file, first line of the function.
Frame = tuple[str, str, int]
Stack = tuple[Frame, ...]  # outermost first


@dataclass(frozen=True, slots=True)
class Profile:
    seconds_by_stack: dict[Stack, float]  # wall time the loop's thread spent with this stack on top
    samples: int

    def collapsed(self) -> bytes:
        """`frame;frame;frame count` lines, outermost frame first; a count is microseconds."""
        lines = [
            ";".join(_label(frame) for frame in stack) + f" {round(seconds * 1e6)}"
            for stack, seconds in sorted(self.seconds_by_stack.items())
            if round(seconds * 1e6) > 0
        ]
        return "".join(line + "\n" for line in lines).encode()

    def speedscope(self, name: str) -> dict[str, Any]:
        """speedscope's file format: one sampled profile, weights in seconds."""
        index: dict[Frame, int] = {}
        samples = [[index.setdefault(frame, len(index)) for frame in stack] for stack in self.seconds_by_stack]
        weights = list(self.seconds_by_stack.values())
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


def _frame(frame_info: str) -> Frame:
    identifier, attributes = parse_frame_info(frame_info)
    function, file, line = identifier.split(IDENTIFIER_SEP)
    owner = next((attribute[1:] for attribute in attributes if attribute[0] == ATTRIBUTE_MARKER_CLASS_NAME), None)
    # An installed module's path from its package down: the same on every machine.
    return f"{owner}.{function}" if owner else function, file.rpartition(_SITE_PACKAGES)[2], int(line or 0)


class Profiler:
    """One profile at a time: a second request while one runs is a 409, not a second sampler."""

    def __init__(self) -> None:
        self._running = False

    async def profile_loop(self, seconds: float) -> Profile:
        """Sample the thread of the running event loop, this coroutine's, for `seconds`."""
        if self._running:
            raise Conflict("a profile is already running on this node; try again when it is done")
        self._running = True
        # async_mode disabled: the whole thread, not only this coroutine's context.
        sampler = Sampler(interval=SAMPLE_INTERVAL_S, async_mode="disabled")
        sampler.start()
        try:
            await asyncio.sleep(seconds)
        finally:
            session = sampler.stop()
            self._running = False
        seconds_by_stack: defaultdict[Stack, float] = defaultdict(float)
        for call_stack, elapsed in session.frame_records:
            seconds_by_stack[tuple(_frame(info) for info in call_stack)] += elapsed
        return Profile(seconds_by_stack, session.sample_count)
