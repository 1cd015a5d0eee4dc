"""When the WAL writer fsyncs (setting `fsync`), on its own so that the settings need not
import the writer.

- always: before a write is acknowledged (group commit: one fsync per batch);
- interval: every `fsync_interval_ms`; an acknowledged write may be lost in a power cut;
- off: never; the OS decides (a process crash loses nothing, a power cut may).
"""

from __future__ import annotations

import enum


class FsyncPolicy(enum.StrEnum):
    ALWAYS = "always"
    INTERVAL = "interval"
    OFF = "off"
