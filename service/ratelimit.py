"""Slow down repeated authentication failures from one address, without locking anyone out."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable


class FailureLimiter:
    """Counts failures per address in a sliding window; past the limit, the address waits.

    Per process: on Cloud Run each instance keeps its own counts, which bounds guessing per
    instance and keeps a flood of failures from writing one audit document each.
    """

    def __init__(
        self,
        max_failures: int = 10,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._clock = clock
        self._max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, address: str | None) -> int | None:
        """Seconds the address must wait, or None when it may try."""
        with self._lock:
            failures = self._recent(address or "")
            if len(failures) < self.max_failures:
                return None
            return max(1, math.ceil(failures[0] + self.window - self._clock()))

    def record_failure(self, address: str | None) -> None:
        with self._lock:
            if len(self._failures) >= self._max_addresses:
                self._failures.clear()  # bounded memory under a spray of addresses
            failures = self._failures.setdefault(address or "", deque())
            failures.append(self._clock())
            while len(failures) > self.max_failures:
                failures.popleft()

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures.get(address, deque())
        cutoff = self._clock() - self.window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        return failures
