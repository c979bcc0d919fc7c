"""Slow down repeated failures from one address, across every process, without locking anyone out.

`SharedFailureLimiter` counts failures per client address in fixed windows in Firestore, so the
limit holds however many Cloud Run instances and gunicorn workers serve the traffic. Each process
keeps a small front: once it has seen an address go over the limit it refuses that address's
failures until the window ends without touching Firestore, so a flood costs no write per request.
When Firestore does not answer, the limiter falls back to the per-process `FailureLimiter`: the
limit is then per process (never unlimited), and a failure is never turned into a 500.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from repositories.audit import AuditEvent, AuditRepository
from service.errors import UnavailableError

logger = logging.getLogger(__name__)

MAX_FAILURES = 10
WINDOW_SECONDS = 60
# After the shared store fails, skip it for a while: a blackholed network would otherwise make
# every failed attempt wait for the store's timeout.
_STORE_RETRY_SECONDS = 10.0
_FLUSH_SECONDS = 5.0


@dataclass(frozen=True)
class RequestOrigin:
    """Where a request came from, for the audit log."""

    ip: str | None = None
    user_agent: str | None = None
    path: str | None = None


class FailureLimiter:
    """Counts failures per address in a sliding window; past the limit, the address waits.

    Per process: the shared limiter's fallback when Firestore does not answer.
    """

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_seconds: float = WINDOW_SECONDS,
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


class FailureCounter(Protocol):
    """The shared store: `repositories.ratelimits.RateLimitRepository`."""

    def add(
        self,
        key: str,
        scope: str,
        window_start: datetime,
        expires_at: datetime,
        failures: int = 1,
        throttled: int = 0,
    ) -> tuple[int, int]: ...

    def failures(self, key: str) -> int: ...


@dataclass(frozen=True)
class Throttle:
    """An address over its failure limit: refuse the attempt for `retry_after` seconds."""

    retry_after: int
    # The first refusal of the address in this window, across every process: audit one
    # summary for it, and none for the refusals after it.
    first: bool


@dataclass
class _Refusals:
    until: float
    flushed_at: float
    unflushed: int = 0


class SharedFailureLimiter:
    """Count failures per address across every process, in Firestore.

    Counts are kept per fixed window; the decision weighs the previous window's count by the
    share of it still inside the last `window_seconds` (a sliding-window estimate), so a burst
    split across a window boundary is still caught and no boundary lets 2x the limit through.
    """

    def __init__(
        self,
        counter: FailureCounter,
        secret_key: str,
        scope: str,
        max_failures: int = MAX_FAILURES,
        window_seconds: int = WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
        max_addresses: int = 10_000,
    ) -> None:
        self.scope = scope
        self.max_failures = max_failures
        self.window = window_seconds
        self._counter = counter
        self._secret = secret_key.encode()
        self._clock = clock  # wall clock: the windows are shared between machines
        self._max_addresses = max_addresses
        self.fallback = FailureLimiter(max_failures, window_seconds, clock, max_addresses)
        self._refusing: dict[str, _Refusals] = {}
        self._fallback_summarised: dict[str, float] = {}  # key -> end of its throttle
        self._store_skipped_until = 0.0
        self._lock = threading.Lock()

    def record_failure(self, address: str | None) -> Throttle | None:
        """Count one failed attempt; return a Throttle when the address is over the limit."""
        key = self.key(address)
        now = self._clock()
        known = self._refuse_known(key, now)
        if known is not None:
            return known  # no Firestore write per request
        wait = self.fallback.retry_after(address)
        self.fallback.record_failure(address)
        counts = self._count_shared(key, now)
        if counts is None:
            return self._fallback_throttle(key, wait, now)
        current, previous = counts
        if self._estimate(current, previous, now) <= self.max_failures:
            return None
        retry_after = self._retry_after(current, previous, now)
        refused = self._add(key, now, failures=0, throttled=1)
        with self._lock:
            if len(self._refusing) >= self._max_addresses:
                self._refusing.clear()  # bounded memory under a spray of addresses
            self._refusing[key] = _Refusals(until=now + retry_after, flushed_at=now)
        # Store gone between the two writes: better one summary too many than none.
        return Throttle(retry_after, first=refused is None or refused[1] == 1)

    def key(self, address: str | None) -> str:
        """Return the keyed hash naming an address: IPs are few enough to guess a plain hash."""
        message = f"{self.scope}\x00{_client_network(address)}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:40]

    def document_id(self, address: str | None, at: float | None = None) -> str:
        """Return the id of the address's counter for the window holding `at` (default now)."""
        return self._document_id(self.key(address), self._window(at))

    def _window(self, at: float | None = None) -> int:
        return int((self._clock() if at is None else at) // self.window)

    def _document_id(self, key: str, window: int) -> str:
        return f"{key}-{window}"

    def _estimate(self, current: int, previous: int, now: float) -> float:
        elapsed = (now % self.window) / self.window
        return current + previous * (1 - elapsed)

    def _retry_after(self, current: int, previous: int, now: float) -> int:
        """Seconds until one more attempt would be within the limit, if no other comes."""
        allowed = self.max_failures - 1
        window_start = now - now % self.window
        if current <= allowed and previous:  # as the previous window's weight fades
            free_at = window_start + self.window * (1 - (allowed - current) / previous)
        else:  # next window, as this one's weight fades
            free_at = window_start + self.window * (2 - allowed / current)
        # Capped: a client that honours Retry-After is never told to wait past one window.
        return min(self.window, max(1, math.ceil(free_at - now)))

    def _count_shared(self, key: str, now: float) -> tuple[int, int] | None:
        """Add this failure; return (this window's count, the previous window's count)."""
        added = self._add(key, now)
        if added is None:
            return None
        try:
            previous = self._counter.failures(self._document_id(key, self._window(now) - 1))
        except UnavailableError as error:
            self._store_failed(now, error)
            return None
        return added[0], previous

    def _add(
        self, key: str, now: float, failures: int = 1, throttled: int = 0
    ) -> tuple[int, int] | None:
        if now < self._store_skipped_until:
            return None
        window = self._window(now)
        start = datetime.fromtimestamp(window * self.window, UTC)
        end = datetime.fromtimestamp((window + 1) * self.window, UTC)
        document_id = self._document_id(key, window)
        try:
            return self._counter.add(document_id, self.scope, start, end, failures, throttled)
        except UnavailableError as error:
            self._store_failed(now, error)
            return None

    def _store_failed(self, now: float, error: UnavailableError) -> None:
        self._store_skipped_until = now + _STORE_RETRY_SECONDS
        # The message names the dependency and the error type only: no address, no key.
        logger.warning(
            f"rate-limit store unavailable, counting {self.scope} failures per process "
            f"for {_STORE_RETRY_SECONDS:.0f} s: {error}"
        )

    def _refuse_known(self, key: str, now: float) -> Throttle | None:
        """Refuse a failure from an address this process has seen go over the limit.

        The refusals still count, in batches: they reach Firestore at most once per
        `_FLUSH_SECONDS` per address and process, and once more when the refusal ends.
        """
        with self._lock:
            known = self._refusing.get(key)
            if known is None:
                return None
            refusing = now < known.until
            known.unflushed += refusing
            flush = (
                known.unflushed if not refusing or now - known.flushed_at >= _FLUSH_SECONDS else 0
            )
            if flush:
                known.unflushed, known.flushed_at = 0, now
            if not refusing:
                del self._refusing[key]
        if flush:
            self._add(key, now, failures=flush, throttled=flush)
        return Throttle(max(1, math.ceil(known.until - now)), first=False) if refusing else None

    def _fallback_throttle(self, key: str, wait: int | None, now: float) -> Throttle | None:
        if wait is None:
            return None
        with self._lock:
            first = self._fallback_summarised.get(key, 0.0) <= now
            if first:
                if len(self._fallback_summarised) >= self._max_addresses:
                    self._fallback_summarised.clear()
                self._fallback_summarised[key] = now + wait
        return Throttle(wait, first=first)


def _client_network(address: str | None) -> str:
    """Name the client: its IPv4 address, or its IPv6 /64 (one subscriber gets a whole /64,
    so counting single IPv6 addresses would let anyone rotate through 2**64 of them)."""
    try:
        parsed = ipaddress.ip_address(address or "")
    except ValueError:
        return address or ""
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def audit_request(
    audit: AuditRepository,
    action: str,
    outcome: str,
    actor: str | None,
    origin: RequestOrigin | None,
    details: dict[str, object],
) -> None:
    """Append one audit event about a request: who, what, the outcome, from where, now."""
    origin = origin or RequestOrigin()
    audit.append(
        AuditEvent(
            action=action,
            outcome=outcome,
            at=datetime.now(UTC),
            actor=actor,
            ip=origin.ip,
            user_agent=origin.user_agent,
            details=details,
        )
    )


def audit_throttle(
    audit: AuditRepository,
    action: str,
    limiter: SharedFailureLimiter,
    throttle: Throttle,
    origin: RequestOrigin,
) -> None:
    """Write the one summary event of an address's throttled window (none after the first)."""
    if not throttle.first:
        return
    audit.append(
        AuditEvent(
            action=action,
            outcome="throttled",
            at=datetime.now(UTC),
            ip=origin.ip,
            user_agent=origin.user_agent,
            details={
                "path": origin.path,
                "reason": "rate_limited",
                "limit": limiter.max_failures,
                "window_seconds": limiter.window,
                "retry_after": throttle.retry_after,
                # Further failures from the address are refused and counted, not audited;
                # rate_limits/{counter} holds this window's failures and refusals.
                "counter": limiter.document_id(origin.ip),
            },
        )
    )
