"""Readiness answers cached per process: `/readyz` is public, and each probe of the backends
costs a Firestore read and a Storage listing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Checks = dict[str, str | None]  # each dependency's problem, or None where it answers

# Cloud Run probes every few seconds and anyone may call /readyz: one answer serves them all
# for this long, so a flood costs the backends nothing more.
READY_FOR_SECONDS = 5.0
# A failing answer is kept too, but for less time. Not caching it at all would be worse in an
# outage: a frozen dependency holds each probe for its full timeout (seconds), and a dead one
# refuses at once, so probes would either pin a thread each or hammer the sick backend as fast
# as requests come. Kept this long, the service still turns ready within about a second of
# the dependency's return.
FAILING_FOR_SECONDS = 1.0


class CachedProbe:
    """Run `probe` at most once per window and answer every caller in between from its result.

    While one caller probes, the others answer at once from the previous result instead of
    waiting for (or repeating) the probe; before the first result, callers wait for it.
    """

    def __init__(
        self,
        probe: Callable[[], Checks],
        clock: Callable[[], float] = time.monotonic,
        ready_for: float = READY_FOR_SECONDS,
        failing_for: float = FAILING_FOR_SECONDS,
    ) -> None:
        self._probe = probe
        self._clock = clock
        self._ready_for = ready_for
        self._failing_for = failing_for
        self._lock = threading.Lock()  # guards the result and its expiry
        self._probing = threading.Lock()  # held by the one caller probing
        self._result: Checks | None = None
        self._expires_at = 0.0

    def check(self) -> Checks:
        """Return the cached result while it is fresh; otherwise probe again."""
        cached = self._fresh()
        if cached is not None:
            return cached
        with self._lock:
            previous = self._result
        if previous is not None and not self._probing.acquire(blocking=False):
            return dict(previous)  # another caller is probing: answer from the last result
        if previous is None:
            self._probing.acquire()  # nothing to answer with yet: wait for the first probe
        try:
            cached = self._fresh()  # a probe may have finished while this caller waited
            if cached is not None:
                return cached
            result = dict(self._probe())
            failing = any(result.values())
            with self._lock:
                self._result = result
                self._expires_at = self._clock() + (
                    self._failing_for if failing else self._ready_for
                )
            return dict(result)
        finally:
            self._probing.release()

    def _fresh(self) -> Checks | None:
        with self._lock:
            if self._result is not None and self._clock() < self._expires_at:
                return dict(self._result)
        return None
