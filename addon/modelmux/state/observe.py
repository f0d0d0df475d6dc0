"""What the state layer tells operators: a log line at most once per interval (an outage must not flood the
log with one line per request)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """`warning(msg)` logs at most once per `interval` seconds; the next line that gets through says how many were
    held back meanwhile. Returns whether it logged."""

    def __init__(self, logger: logging.Logger, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._next = float("-inf")
        self.suppressed = 0

    def warning(self, msg: str) -> bool:
        return self.log(logging.WARNING, msg)

    def log(self, level: int, msg: str) -> bool:
        now = self.clock()
        if now < self._next:
            self.suppressed += 1
            return False
        if self.suppressed:
            msg = f"{msg} ({self.suppressed} more like it in the last {self.interval:g} s not logged)"
            self.suppressed = 0
        self._next = now + self.interval
        self.logger.log(level, msg)
        return True
