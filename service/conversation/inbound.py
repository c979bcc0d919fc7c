"""Conversations: run each inbound message through the flow engine in one transaction, then
send the queued replies. Also invitations, delivery failures and the outbox flush task."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import phonenumbers

from repositories.archive import IndexEntry
from repositories.conversations import (
    Claim,
    ConversationIntegrityError,
    ConversationUpdate,
    OutboxItem,
    SendResult,
    StoredConversation,
)
from service.archive.records import erase_record
from service.conversation.flow.engine import ERASE, advance, invite
from service.conversation.flow.questionnaire import load_questionnaire
from service.domain.identity import PatientIdentity
from service.domain.record import IntakeRecord, new_record_id
from service.domain.turns import ConversationState, Effect, Step
from service.errors import ConflictError, InvalidInputError, NotFoundError, UnavailableError
from service.whatsapp.graph import (
    GraphError,
    OutsideWindowError,
    RejectedMessageError,
    addressed,
    reply_payload,
    template_payload,
)
from service.whatsapp.webhook import IdentityChange, InboundMessage, StatusUpdate, WebhookBatch

if TYPE_CHECKING:  # the wiring is the shell's; a use case only names its type
    from service.shell.components import Components


logger = logging.getLogger(__name__)

# A lease (OUTBOX_LEASE_SECONDS, 180 s by default) must outlast a round of sends, or another
# process re-sends what is in flight: one send takes at most 3 attempts x (3 s connect + 10 s
# read) + 5 s of backoff, and a round stops starting new sends after _ROUND_BUDGET, so a round
# ends well within the lease. The price: replies leased by a process that died stay queued
# until the lease ends (nobody can tell a dead holder from a slow one), then go with the next
# message, Meta's redelivery or the flush task.
_ROUND_BUDGET = timedelta(seconds=60)
# Meta delivers a free-form message only within 24 hours of the patient's last message. A
# reply is never given up for a number of failed attempts (an outage of any length would
# otherwise throw away the patient's next question): only once it can no longer be delivered.
SERVICE_WINDOW = timedelta(hours=24)
_DRAFT_KEYS = (
    "answers",
    "history",
    "returning_to_summary",
    "pending_command",
    "draft_record_id",
    "consent_at",
)


def state_from_stored(stored: StoredConversation) -> ConversationState | None:
    """Rebuild the engine's state from the plain fields and the decrypted draft."""
    if not stored.exists or "status" not in stored.fields:
        return None
    fields, draft = stored.fields, stored.draft
    return ConversationState(
        status=fields["status"],
        step=fields.get("step"),
        language=fields.get("language"),
        questionnaire_version=fields.get("questionnaire_version", "1"),
        invalid_answers=fields.get("invalid_answers", 0),
        answers=draft.get("answers", {}),
        history=tuple(draft.get("history", ())),
        returning_to_summary=draft.get("returning_to_summary", False),
        pending_command=draft.get("pending_command"),
        draft_record_id=draft.get("draft_record_id"),
        consent_at=draft.get("consent_at"),
        record_ids=tuple(fields.get("record_ids", ())),
    )


def update_from_state(
    state: ConversationState, replies: list[dict[str, Any]]
) -> ConversationUpdate:
    """Split the engine's state into plain fields and the draft that is stored encrypted."""
    fields = {
        "status": state.status,
        "step": state.step,
        "language": state.language,
        "questionnaire_version": state.questionnaire_version,
        "invalid_answers": state.invalid_answers,
        "record_ids": list(state.record_ids),
        "record_id": state.record_ids[-1] if state.record_ids else None,
    }
    draft = {key: _jsonable(getattr(state, key)) for key in _DRAFT_KEYS}
    meaningful = any(draft[key] for key in _DRAFT_KEYS)
    return ConversationUpdate(fields=fields, draft=draft if meaningful else None, replies=replies)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value


def handle_webhook(components: Components, batch: WebhookBatch) -> None:
    """Process every message, identity change and status of a verified webhook payload."""
    for change in batch.identity_changes:
        handle_identity_change(components, change)
    for message in batch.messages:
        try:
            handle_message(components, message)
        except ConversationIntegrityError:
            # Retrying cannot repair a state that fails authentication, and it would hold up
            # every other patient in Meta's batch: logged (by the repository) and set aside.
            logger.error(
                "message set aside: conversation state unreadable",
                extra={"message_type": message.message_type},
            )
    for status in batch.statuses:
        handle_status(components, status)
    if batch.skipped or batch.errors:
        logger.warning(
            "webhook parts skipped",
            extra={"skipped": batch.skipped, "error_codes": batch.errors[:10]},
        )


def handle_message(components: Components, message: InboundMessage) -> None:
    """Apply one patient message exactly once, then send what it queued."""
    repo = components.repos.conversations

    archive = components.repos.archive
    stored_objects: dict[str, IndexEntry] = {}

    def decide(stored: StoredConversation) -> ConversationUpdate:
        state = state_from_stored(stored)
        questionnaire = load_questionnaire(state.questionnaire_version if state else "1")
        step = advance(questionnaire, state, message.inbound, message.timestamp, new_record_id())
        update = _update_for(step)
        for effect in step.effects:
            entry = _apply_effect(components, stored.identity or message.identity, effect)
            if entry is not None:
                components.failpoints.hit("conversation.archive_stored")
                stored_objects[entry.record_id] = entry
                update.also_write.append(
                    lambda batch, entry=entry: archive.write_index_entry(batch, entry)
                )
        update.fields["last_inbound_at"] = message.timestamp
        components.failpoints.hit("conversation.before_commit")
        return update

    update, claim = repo.apply_inbound(
        message.identity, message.message_id, datetime.now(UTC), decide, _lease(components)
    )
    components.failpoints.hit("conversation.after_commit")
    _discard_lost_records(components, stored_objects, update)
    logger.info(
        "inbound message processed" if update else "duplicate message ignored",
        extra={
            "conversation": claim.conversation[:12],
            "message_type": message.message_type,
            "known_by": _known_by(message.identity),
            "step": update.fields.get("step") if update else None,
        },
    )
    send_claimed(components, claim)


def handle_identity_change(components: Components, change: IdentityChange) -> None:
    """Follow a patient's new number or BSUID, so their form and replies follow them."""
    key = components.repos.conversations.relink(
        change.previous, change.current, change.message_id, datetime.now(UTC)
    )
    logger.info(
        "patient identity changed" if key else "identity change for an unknown patient",
        extra={"conversation": (key or "")[:12], "change": change.kind},
    )


def _known_by(identity: PatientIdentity) -> str:
    """Say how Meta identified a patient, without saying who: for logs and support."""
    return "+".join(name for name in ("phone", "bsuid") if getattr(identity, name))


def _lease(components: Components) -> timedelta:
    return timedelta(seconds=components.config.outbox_lease_seconds)


def _update_for(step: Step) -> ConversationUpdate:
    # Replies are queued without a recipient: they are addressed when sent, to the patient's
    # identity as known then (a number may change while a reply waits).
    replies = [reply_payload(reply) for reply in step.replies]
    update = update_from_state(step.state, replies)
    # A patient who stops gets the confirmation and nothing queued before it; so does one who
    # asks for erasure (from the question on: their queued replies, a summary say, may repeat
    # their answers; on "no, keep it" the bot asks its current question again).
    erasing = step.state.pending_command == ERASE or any(
        effect.kind == "erase_records" for effect in step.effects
    )
    update.drop_outbox = step.state.status == "opted_out" or erasing
    return update


def _discard_lost_records(
    components: Components, stored: dict[str, IndexEntry], update: ConversationUpdate | None
) -> None:
    """Delete objects written by a transaction attempt that did not commit.

    A contended transaction runs decide() again on fresh state; when the committed attempt did
    not complete the form (say a STOP won the race), the object an earlier attempt wrote has no
    index entry and no owner: it must not linger as an unreachable copy of patient data.
    """
    committed = set(update.fields.get("record_ids", [])) if update else set()
    for record_id, entry in stored.items():
        if record_id not in committed:
            components.repos.archive.discard_unindexed(entry)


def _apply_effect(
    components: Components, identity: PatientIdentity, effect: Effect
) -> IndexEntry | None:
    """Store an archive object (its index entry commits with the conversation) or erase.

    Both are idempotent, as a contended transaction may repeat them.
    """
    if effect.kind == "archive" and effect.record is not None:
        return components.repos.archive.store_object(_record(identity, effect.record))
    if effect.kind == "erase_records":
        for record_id in effect.record_ids:
            try:
                erase_record(
                    components,
                    record_id,
                    actor="patient",
                    reason="patient request",
                    clear_conversation=False,  # the new state, committed next, forgets it
                )
            except NotFoundError:
                logger.warning("record to erase not found", extra={"record_id": record_id})
    return None


def _record(identity: PatientIdentity, fields: dict[str, Any]) -> IntakeRecord:
    return IntakeRecord(
        record_id=fields["record_id"],
        submitted_at=datetime.fromisoformat(fields["submitted_at"]),
        wa_id=identity.phone,
        bsuid=identity.bsuid,
        name=fields["name"],
        date_of_birth=date.fromisoformat(fields["date_of_birth"]),
        gender=fields["gender"],
        address=fields["address"],
        medical_conditions=tuple(fields["medical_conditions"]),
        current_medications=tuple(fields["current_medications"]),
        language=fields["language"],
        consent_at=datetime.fromisoformat(fields["consent_at"]),
        questionnaire_version=str(fields["questionnaire_version"]),
    )


def handle_status(components: Components, status: StatusUpdate) -> None:
    """Keep failed deliveries visible to support staff; the others need no storage."""
    if status.status == "failed":
        key = components.repos.conversations.record_failed_status(
            status.identity, status.error_codes, status.timestamp
        )
        logger.warning(
            "message delivery failed",
            extra={"conversation": (key or "")[:12], "error_codes": list(status.error_codes)},
        )


@dataclass(frozen=True)
class FlushReport:
    sent: int = 0
    failed: int = 0


def flush_outbox(components: Components, key: str) -> FlushReport:
    """Lease one conversation's queued replies and send them."""
    claim = components.repos.conversations.claim_outbox(key, datetime.now(UTC), _lease(components))
    return send_claimed(components, claim)


def send_claimed(components: Components, claim: Claim) -> FlushReport:
    """Send leased replies in order; stop at the first that cannot go now.

    Each reply the Graph API took (or that is dropped) is settled at once, in its own write:
    a process killed later in the round can then only leave that one reply unsettled, the
    single reply whose send and settle it was between (Meta has no idempotency key, so that
    one may go twice once its lease runs out). The rest are released together at the end.
    """
    conversations = components.repos.conversations
    key, identity, items = claim.conversation, claim.identity, claim.items
    released: list[SendResult] = []
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
        if datetime.now(UTC) - started > _ROUND_BUDGET:
            released = [SendResult(later.key) for later in items[index:]]
            break
        result = _send_one(components, identity, item, reengaged, claim.last_inbound_at)
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
            sent += 1 if result.wamid else 0
            continue
        failed = 1
        # Release the later replies so order is kept: they go after this one, not before.
        released = [result, *(SendResult(later.key) for later in items[index + 1 :])]
        break
    conversations.settle_outbox(key, datetime.now(UTC), items, released)
    return FlushReport(sent=sent, failed=failed)


def _send_one(
    components: Components,
    identity: PatientIdentity,
    item: OutboxItem,
    reengaged: list[bool],
    last_inbound_at: datetime | None,
) -> SendResult:

    try:
        payload = addressed(item.payload, identity)
        wamid = components.graph.send(payload).wamid
        return SendResult(item.key, wamid=wamid, attempted=True)
    except OutsideWindowError as error:
        if not reengaged[0]:  # one invitation back, however many replies were waiting
            _reengage(components, identity)
            reengaged[0] = True
        return SendResult(
            item.key, error_code=error.code, drop=True, attempted=True, reason="outside_window"
        )
    except RejectedMessageError as error:
        logger.error("Graph API rejected a reply", extra={"graph_code": error.code})
        return SendResult(
            item.key, error_code=error.code, drop=True, attempted=True, reason="rejected"
        )
    except GraphError as error:
        # Kept however often it failed, until Meta could no longer deliver it anyway.
        expired = last_inbound_at is not None and (
            datetime.now(UTC) - last_inbound_at > SERVICE_WINDOW
        )
        return SendResult(
            item.key,
            error_code=error.code or 0,
            drop=expired,
            attempted=True,
            reason="window_closed" if expired else None,
        )


def _reengage(components: Components, identity: PatientIdentity) -> None:
    """Outside the 24-hour window only a template may go: invite the patient back once."""
    try:
        components.graph.send(template_payload(identity, components.config.whatsapp_start_template))
    except GraphError as error:
        logger.warning("re-engagement template failed", extra={"graph_code": error.code})


def flush_all_outboxes(components: Components) -> FlushReport:
    """Retry every conversation with queued replies (Cloud Scheduler calls this)."""
    sent = failed = 0
    for key in components.repos.conversations.with_pending_outbox():
        report = flush_outbox(components, key)
        sent, failed = sent + report.sent, failed + report.failed
    return FlushReport(sent=sent, failed=failed)


def start_conversation(components: Components, to: str, provider_id: str) -> str:
    """Send the start template to a patient and record the invitation; return the phone
    number (E.164 digits). A patient who already wrote with this number keeps their
    conversation, whichever identifier it is filed under."""
    identity = PatientIdentity(phone=normalise_phone(to))
    now = datetime.now(UTC)

    def decide(stored: StoredConversation) -> ConversationUpdate:
        current = state_from_stored(stored)
        if current is not None and current.status == "opted_out":
            # The bot promised a patient who wrote STOP no more messages until they write.
            raise ConflictError("this patient opted out; they must write to the clinic first")
        state = invite(load_questionnaire("1"), current)
        update = update_from_state(state, [])
        update.fields.update({"invited_at": now, "invited_by": provider_id})
        return update

    key, _ = components.repos.conversations.update_without_message(identity, now, decide)
    try:
        components.graph.send(template_payload(identity, components.config.whatsapp_start_template))
    except GraphError as error:
        raise UnavailableError(
            f"the invitation could not be sent (Graph API error {error.code})"
        ) from None
    logger.info("invitation sent", extra={"conversation": key[:12], "provider": provider_id})
    assert identity.phone is not None
    return identity.phone


def normalise_phone(value: object) -> str:
    """Return the WhatsApp id (E.164 digits, no '+') of a phone number, or raise 400."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError("'to' must be a phone number in international format")
    text = value.strip()
    if not text.startswith("+"):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise InvalidInputError("'to' is not a valid phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidInputError("'to' is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
