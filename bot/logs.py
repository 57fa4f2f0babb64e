"""Logging that no input can turn into a disk-filler.

`RateLimit` passes at most BURST records of one kind (logger, level and message
template) per WINDOW seconds and then says how many it held back, so a flood of
hostile requests or a failing disk costs a few lines a minute, not megabytes.
"""

from __future__ import annotations

import logging
import time

BURST = 10
WINDOW = 60.0


class RateLimit(logging.Filter):
    def __init__(self, burst: int = BURST, window: float = WINDOW,
                 clock=time.monotonic) -> None:
        super().__init__()
        self.burst, self.window, self.clock = burst, window, clock
        self._seen: dict[tuple, list[float | int]] = {}  # kind -> [window start, passed, held]

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg)[:200])
        now = self.clock()
        seen = self._seen.get(kind)
        if seen is None or now - seen[0] >= self.window:
            held = int(seen[2]) if seen else 0
            self._seen[kind] = [now, 1, 0]
            if len(self._seen) > 10_000:  # (bounded: drop the oldest kinds)
                for old in list(self._seen)[:1000]:
                    del self._seen[old]
            if held:
                record.msg = f"{record.msg} (and {held} more like it in the last minute, " \
                             "not shown)"
            return True
        if seen[1] < self.burst:
            seen[1] += 1
            return True
        seen[2] += 1
        return False
