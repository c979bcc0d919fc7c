"""Sending off the webhook's request: a pool of threads in each process drains the outbox.

The webhook commits a message's new state and its queued replies, leased to this process in
the same commit, hands the lease (a Claim) to the sender and answers Meta. The sender's threads
send each conversation's replies in order, one conversation per thread at a time, and settle
each reply as the Graph API takes it (service/conversation/outbox.py). The outbox in Firestore
stays the source of truth: what a process holds in memory is only which conversations to look
at, so a process that dies (SIGKILL, an instance taken away) loses nothing. Its leases run out
and the replies go with the patient's next message, Meta's redelivery or the flush task.

Order. A patient who writes again while their last reply is still being sent gets a claim
that passes over the replies this process holds (`holder`) rather than waiting for them; it is
sent only once those were settled here, in the order the claims were taken. Anything else
(a reply that failed, a claim held in memory too long, one whose predecessors this process no
longer knows about) is released and claimed again from the outbox, where order is kept.

Looking again. Replies queued behind another process's lease are polled until that lease
ends. A round that failed (the Graph API down, throttled) is retried while the process lives,
with backoff and never before Meta's Retry-After; after about a minute the flush task and the
patient's next message take over, as before.
"""

from __future__ import annotations

import atexit
import heapq
import logging
import os
import queue
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from repositories.conversations import Claim
from service.conversation.outbox import (
    ROUND_BUDGET,
    FlushReport,
    lease_of,
    release,
    send_claimed,
)
from service.conversation.ports import ConversationDeps

logger = logging.getLogger(__name__)

# A round must end before its lease does, or another process could send the same replies: a
# claim that waited in memory so long that a whole round might outlast its lease is released
# and claimed afresh. (One send takes at most ~45 s: see service/whatsapp/graph.py.)
_ROUND_MARGIN = ROUND_BUDGET + timedelta(seconds=45)
# Failed rounds retried in this process: after ~1 minute the flush task takes over.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
# Polling a conversation blocked by another process's lease: soon, then less often.
_POLL_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# Conversations this process keeps track of at most; beyond, claims stay leased in Firestore
# and go once their lease ends (flush task or next message): memory stays bounded under a flood.
MAX_TRACKED = 20_000
# Replies this process settled lately (conversation, reply key): what a later claim may have
# passed over.
_SETTLED_KEPT = 50_000
# The senders whose threads run in this process, for a shutdown hook to stop.
_STARTED: weakref.WeakSet[ReplySender] = weakref.WeakSet()


def stop_senders() -> None:
    """Stop every sender running in this process, each within its drain time (gunicorn's
    quick-shutdown hook calls this before the worker leaves)."""
    for sender in list(_STARTED):
        sender.stop()


@dataclass
class _Work:
    """What this process knows it has to do for one conversation."""

    claims: list[Claim] = field(default_factory=list)
    look_again: bool = False  # claim what may have queued since (or behind a lease)
    queued: bool = False  # in the ready queue
    running: bool = False  # a thread has it now
    scheduled: bool = False  # a timer will look again
    failures: int = 0  # failed rounds in a row
    polls: int = 0  # looks that found the outbox still leased elsewhere


@dataclass
class _Outcome:
    failed: bool = False
    look_again: bool = False  # at once (after claims taken meanwhile)
    blocked_until: float | None = None  # monotonic time another process's lease ends
    retry_after: float = 0.0  # seconds Meta asked us to wait after throttling

    def add(self, report: FlushReport) -> None:
        self.failed = self.failed or report.failed > 0
        self.retry_after = max(self.retry_after, report.retry_after or 0.0)


class ReplySender:
    """Send leased replies on background threads, one conversation at a time, in order."""

    def __init__(
        self,
        components: ConversationDeps,
        threads: int = 16,
        drain_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        if threads < 1:
            raise ValueError("a sender needs at least one thread")
        self._components = components
        self._threads = threads
        self._drain_seconds = drain_seconds
        self._clock = clock
        self._retry_delays = retry_delays
        self._lock = threading.Condition()
        self._work: dict[str, _Work] = {}
        self._settled: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._ready: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, str]] = []
        self._timer_sequence = 0
        self._pid: int | None = None  # threads run in this process (gunicorn forks)
        self._holder = ""
        self._pool: list[threading.Thread] = []
        self._stopping = False
        self.rounds = 0  # rounds run, for tests and the bench
        self.errors = 0  # rounds that raised (logged)

    @property
    def holder(self) -> str:
        """This process's name on the leases it takes (a fresh one in each process)."""
        with self._lock:
            self._ensure_started()
            return self._holder

    # The webhook's side

    def submit(self, claim: Claim) -> bool:
        """Take over the replies the caller's commit leased (and any queued behind a lease).

        Returns False when this process does not take them (it is stopping, or tracks too
        many conversations); they stay leased in Firestore and go once the lease ends.
        """
        if not claim.items and not claim.waiting:
            return True
        with self._lock:
            self._ensure_started()
            if self._stopping or (
                claim.conversation not in self._work and len(self._work) >= MAX_TRACKED
            ):
                logger.warning(
                    "replies left to their lease",
                    extra={"conversation": claim.conversation[:12], "stopping": self._stopping},
                )
                return False
            work = self._work.setdefault(claim.conversation, _Work())
            if claim.items:
                work.claims.append(claim)
            if claim.waiting:
                work.look_again = True
            self._make_ready(claim.conversation, work)
            return True

    # Tests, the bench and shutdown

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is queued or being sent (timers for later looks aside)."""
        deadline = self._clock() + timeout
        with self._lock:
            while any(work.queued or work.running for work in self._work.values()):
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.05))
            return True

    def stop(self, timeout: float | None = None) -> bool:
        """Take no more work and send what is queued for up to `timeout` seconds (the
        configured drain time by default); return True when everything went.

        What is not sent by then stays leased in Firestore and goes after the lease.
        """
        with self._lock:
            if self._pid != os.getpid() or self._stopping:
                return True
            self._stopping = True
            self._timers.clear()
            for work in self._work.values():
                work.scheduled = False
            self._lock.notify_all()
        idle = self.wait_idle(self._drain_seconds if timeout is None else timeout)
        for _ in self._pool:
            self._ready.put(None)
        if not idle:
            logger.warning("sender stopped with replies in flight; their leases will free them")
        return idle

    # Threads

    def _ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        # First use in this process (gunicorn forks workers after the app is built).
        self._pid = os.getpid()
        self._holder = secrets.token_hex(8)
        self._work.clear()
        self._settled.clear()
        self._ready = queue.SimpleQueue()
        self._timers = []
        self._stopping = False
        self._pool = [
            threading.Thread(target=self._run, name=f"reply-sender-{n}", daemon=True)
            for n in range(self._threads)
        ]
        timer = threading.Thread(target=self._run_timers, name="reply-timer", daemon=True)
        self._pool.append(timer)
        for thread in self._pool:
            thread.start()
        # A stopping worker (SIGTERM from Cloud Run, Ctrl-C) sends what it holds, briefly.
        _STARTED.add(self)
        atexit.register(self.stop)

    def _make_ready(self, key: str, work: _Work) -> None:
        if not work.queued and not work.running:
            work.queued = True
            self._ready.put(key)
        self._lock.notify_all()

    def _run(self) -> None:
        while True:
            key = self._ready.get()
            if key is None:
                return
            with self._lock:
                work = self._work.get(key)
                if work is None:
                    continue
                work.queued, work.running = False, True
                claims, work.claims = work.claims, []
                look_again, work.look_again = work.look_again, False
            outcome = _Outcome(look_again=look_again)
            try:
                self._round(key, claims, outcome)
            except Exception as error:  # a thread must outlive any one conversation's round
                self.errors += 1
                outcome.failed = True
                logger.error(
                    "sending round failed",
                    extra={"conversation": key[:12], "error": type(error).__name__},
                )
            self._finish(key, outcome)

    def _round(self, key: str, claims: list[Claim], outcome: _Outcome) -> None:
        components = self._components
        for claim in claims:
            if outcome.failed or not self._sendable(claim):
                release(components, claim)
                outcome.look_again = True
                continue
            self._send(claim, outcome)
            # Replies queued behind this process's own lease: look once this round is done.
            outcome.look_again = outcome.look_again or claim.waiting > 0
        self.rounds += 1
        if outcome.failed or not outcome.look_again:
            return
        with self._lock:
            if self._work[key].claims:
                return  # claims taken meanwhile go first; the look follows them
        outcome.look_again = False
        # Leases of this process's own are waited for too: none is in memory any more.
        claim = components.repos.conversations.claim_outbox(
            key, datetime.now(UTC), lease_of(components)
        )
        self._send(claim, outcome)
        if claim.waiting and claim.blocked_until is not None:
            outcome.blocked_until = self._until(claim.blocked_until)

    def _sendable(self, claim: Claim) -> bool:
        """Whether the claim may go now: whatever it passed over was settled here, and its
        lease lasts longer than a round can."""
        if claim.leased_until is not None and (
            datetime.now(UTC) + _ROUND_MARGIN > claim.leased_until
        ):
            return False
        with self._lock:
            return all((claim.conversation, key) in self._settled for key in claim.skipped)

    def _send(self, claim: Claim, outcome: _Outcome) -> None:
        report = send_claimed(self._components, claim)
        outcome.add(report)
        with self._lock:
            for key in report.settled:
                self._settled[(claim.conversation, key)] = None
            while len(self._settled) > _SETTLED_KEPT:
                self._settled.popitem(last=False)

    def _until(self, when: datetime) -> float:
        return self._clock() + max(0.0, (when - datetime.now(UTC)).total_seconds()) + 0.05

    def _finish(self, key: str, outcome: _Outcome) -> None:
        with self._lock:
            work = self._work[key]
            work.running = False
            work.look_again = work.look_again or (outcome.look_again and not outcome.failed)
            delay: float | None = None
            if outcome.failed:
                work.failures += 1
                if work.failures <= len(self._retry_delays):
                    # Never sooner than Meta's Retry-After: retrying earlier only adds to it.
                    delay = max(self._retry_delays[work.failures - 1], outcome.retry_after)
            else:
                work.failures = 0
            if outcome.blocked_until is not None and not outcome.failed:
                work.polls += 1
                poll = _POLL_DELAYS[min(work.polls, len(_POLL_DELAYS)) - 1]
                delay = min(poll, max(0.0, outcome.blocked_until - self._clock()))
            else:
                work.polls = 0
            if work.claims or work.look_again:
                self._make_ready(key, work)
            elif delay is not None and not self._stopping:
                self._schedule(key, work, delay)
            elif not work.scheduled:
                del self._work[key]
            self._lock.notify_all()

    def _schedule(self, key: str, work: _Work, delay: float) -> None:
        work.scheduled = True
        self._timer_sequence += 1
        heapq.heappush(self._timers, (self._clock() + delay, self._timer_sequence, key))
        self._lock.notify_all()

    def _run_timers(self) -> None:
        with self._lock:
            while not self._stopping:
                if not self._timers:
                    self._lock.wait(1.0)
                    continue
                due, _, key = self._timers[0]
                left = due - self._clock()
                if left > 0:
                    self._lock.wait(min(left, 1.0))
                    continue
                heapq.heappop(self._timers)
                work = self._work.get(key)
                if work is None or not work.scheduled:
                    continue
                work.scheduled = False
                work.look_again = True
                self._make_ready(key, work)
