"""Sending queued replies: leased, in order, each settled right after its send; kept through
any outage until Meta could no longer deliver them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from repositories.conversations import (
    Claim,
    DropReason,
    OutboxItem,
    SendResult,
)
from service.conversation.ports import ConversationDeps
from service.domain.identity import PatientIdentity
from service.whatsapp.graph import (
    GraphError,
    OutsideWindowError,
    RejectedMessageError,
    addressed,
    template_payload,
)

logger = logging.getLogger(__name__)


# A lease (OUTBOX_LEASE_SECONDS, 180 s by default) must outlast a round of sends, or another
# process re-sends what is in flight: one send takes at most 3 attempts x (3 s connect + 10 s
# read) + 5 s of backoff, and a round stops starting new sends after ROUND_BUDGET, so a round
# ends well within the lease. The price: replies leased by a process that died stay queued
# until the lease ends (nobody can tell a dead holder from a slow one), then go with the next
# message, Meta's redelivery or the flush task.
ROUND_BUDGET = timedelta(seconds=60)


# Meta delivers a free-form message only within 24 hours of the patient's last message. A
# reply is never given up for a number of failed attempts (an outage of any length would
# otherwise throw away the patient's next question): only once it can no longer be delivered.
SERVICE_WINDOW = timedelta(hours=24)


def lease_of(components: ConversationDeps) -> timedelta:
    return timedelta(seconds=components.config.outbox_lease_seconds)


@dataclass(frozen=True)
class FlushReport:
    sent: int = 0
    failed: int = 0
    # What Meta asked for when it throttled the failed send (Retry-After, seconds).
    retry_after: float | None = None
    settled: tuple[str, ...] = ()  # the replies sent or dropped, by key


def flush_outbox(components: ConversationDeps, key: str) -> FlushReport:
    """Lease one conversation's queued replies and send them."""
    claim = components.repos.conversations.claim_outbox(
        key, datetime.now(UTC), lease_of(components)
    )
    return send_claimed(components, claim)


def send_claimed(components: ConversationDeps, claim: Claim) -> FlushReport:
    """Send leased replies in order; stop at the first that cannot go now.

    Each reply the Graph API took (or that is dropped) is settled at once, in its own write:
    a process killed later in the round can then only leave that one reply unsettled, the
    single reply whose send and settle it was between (Meta has no idempotency key, so that
    one may go twice once its lease runs out). The rest are released together at the end.
    """
    conversations = components.repos.conversations
    key, identity, items = claim.conversation, claim.identity, claim.items
    released: list[SendResult] = []
    settled: list[str] = []
    retry_after: float | None = None
    sent = failed = 0
    if not items:
        return FlushReport()
    if identity is None:
        # Cannot happen for a conversation written by this version; a document restored by
        # hand without its identity keeps its replies (they are not dropped) and says so.
        logger.error("queued replies with no known recipient", extra={"conversation": key[:12]})
        return FlushReport(failed=1)
    started = datetime.now(UTC)
    reengaged = [False]
    for index, item in enumerate(items):
        if datetime.now(UTC) - started > ROUND_BUDGET:
            released = [SendResult(later.key) for later in items[index:]]
            break
        result, retry_after = _send_one(
            components, identity, item, reengaged, claim.last_inbound_at
        )
        if result.wamid is not None:
            components.failpoints.hit("conversation.after_send")  # Meta has it; not recorded
        if result.drop:
            logger.warning(
                "reply dropped",
                extra={
                    "conversation": key[:12],
                    "reason": result.reason,
                    "graph_code": result.error_code,
                    "attempts": item.attempts + 1,
                },
            )
        if result.wamid is not None or result.drop:
            conversations.settle_outbox(key, datetime.now(UTC), [item], [result])
            settled.append(item.key)
            sent += 1 if result.wamid else 0
            continue
        failed = 1
        # Release the later replies so order is kept: they go after this one, not before.
        released = [result, *(SendResult(later.key) for later in items[index + 1 :])]
        break
    conversations.settle_outbox(key, datetime.now(UTC), items, released)
    return FlushReport(
        sent=sent,
        failed=failed,
        retry_after=retry_after if failed else None,
        settled=tuple(settled),
    )


def _send_one(
    components: ConversationDeps,
    identity: PatientIdentity,
    item: OutboxItem,
    reengaged: list[bool],
    last_inbound_at: datetime | None,
) -> tuple[SendResult, float | None]:
    """Send one reply; return what became of it and any Retry-After Meta answered with."""
    try:
        payload = addressed(item.payload, identity)
        wamid = components.graph.send(payload).wamid
        return SendResult(item.key, wamid=wamid, attempted=True), None
    except OutsideWindowError as error:
        if not reengaged[0]:  # one invitation back, however many replies were waiting
            _reengage(components, identity)
            reengaged[0] = True
        return SendResult(
            item.key,
            error_code=error.code,
            drop=True,
            attempted=True,
            reason=DropReason.OUTSIDE_WINDOW,
        ), None
    except RejectedMessageError as error:
        logger.error("Graph API rejected a reply", extra={"graph_code": error.code})
        return SendResult(
            item.key, error_code=error.code, drop=True, attempted=True, reason=DropReason.REJECTED
        ), None
    except GraphError as error:
        # Kept however often it failed, until Meta could no longer deliver it anyway.
        # A template (a reminder, an invitation) may go outside the window: never expired.
        expired = (
            item.payload.get("type") != "template"
            and last_inbound_at is not None
            and datetime.now(UTC) - last_inbound_at > SERVICE_WINDOW
        )
        return SendResult(
            item.key,
            error_code=error.code or 0,
            drop=expired,
            attempted=True,
            reason=DropReason.WINDOW_CLOSED if expired else None,
        ), getattr(error, "retry_after", None)


def _reengage(components: ConversationDeps, identity: PatientIdentity) -> None:
    """Outside the 24-hour window only a template may go: invite the patient back once."""
    try:
        components.graph.send(template_payload(identity, components.config.whatsapp_start_template))
    except GraphError as error:
        logger.warning("re-engagement template failed", extra={"graph_code": error.code})


def release(components: ConversationDeps, claim: Claim) -> None:
    """Give leased replies back unsent, so a later claim takes them again, in order."""
    results = [SendResult(item.key) for item in claim.items]
    components.repos.conversations.settle_outbox(
        claim.conversation, datetime.now(UTC), claim.items, results
    )


def flush_all_outboxes(components: ConversationDeps) -> FlushReport:
    """Retry every conversation with queued replies (Cloud Scheduler calls this)."""
    sent = failed = 0
    for key in components.repos.conversations.with_pending_outbox():
        report = flush_outbox(components, key)
        sent, failed = sent + report.sent, failed + report.failed
    return FlushReport(sent=sent, failed=failed)
