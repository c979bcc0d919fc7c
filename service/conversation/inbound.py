"""Each webhook delivery: every patient message through the flow engine, exactly once, with
its effects (archive, erase); identity changes; failed deliveries."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from repositories.archive import IndexEntry
from repositories.conversations import (
    ConversationIntegrityError,
    ConversationUpdate,
    StoredConversation,
)
from service.archive.records import erase_record
from service.conversation.flow.engine import ERASE, advance
from service.conversation.flow.questionnaire import load_questionnaire
from service.conversation.outbox import lease_of
from service.conversation.ports import ConversationDeps
from service.conversation.reminders import after_message
from service.conversation.state import state_from_stored, update_from_state
from service.domain.identity import PatientIdentity
from service.domain.record import IntakeRecord, new_record_id
from service.domain.turns import ConversationStatus, Effect, Step
from service.errors import NotFoundError
from service.whatsapp.graph import (
    reply_payload,
)
from service.whatsapp.webhook import (
    DeliveryStatus,
    IdentityChange,
    InboundMessage,
    StatusUpdate,
    WebhookBatch,
)

logger = logging.getLogger(__name__)


def handle_webhook(components: ConversationDeps, batch: WebhookBatch) -> None:
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


def handle_message(components: ConversationDeps, message: InboundMessage) -> None:
    """Apply one patient message exactly once; hand what it queued to the sender."""
    repo = components.repos.conversations
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
                update.archived.append(entry)
        update.fields["last_inbound_at"] = message.timestamp
        # A new silence begins: the reminder schedule starts again, in the same commit.
        update.fields.update(
            after_message(
                components.config,
                stored.fields,
                state,
                step.state,
                message.timestamp,
                stored.identity or message.identity,
            )
        )
        components.failpoints.hit("conversation.before_commit")
        return update

    update, claim = repo.apply_inbound(
        message.identity,
        message.message_id,
        datetime.now(UTC),
        decide,
        lease_of(components),
        components.sender.holder,
    )
    components.failpoints.hit("conversation.after_commit")
    _discard_lost_records(components, stored_objects, update)
    logger.info(
        "inbound message processed" if update else "duplicate message ignored",
        extra={
            "conversation": claim.conversation[:12],
            "message_type": message.message_type,
            "known_by": message.identity.known_by,
            "step": update.fields.get("step") if update else None,
        },
    )
    # Meta's request is answered now: the Graph API's latency never reaches it.
    components.sender.submit(claim)


def handle_identity_change(components: ConversationDeps, change: IdentityChange) -> None:
    """Follow a patient's new number or BSUID, so their form and replies follow them."""
    key = components.repos.conversations.relink(
        change.previous, change.current, change.message_id, datetime.now(UTC)
    )
    logger.info(
        "patient identity changed" if key else "identity change for an unknown patient",
        extra={"conversation": (key or "")[:12], "change": change.kind},
    )


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
    update.drop_outbox = step.state.status == ConversationStatus.OPTED_OUT or erasing
    return update


def _discard_lost_records(
    components: ConversationDeps, stored: dict[str, IndexEntry], update: ConversationUpdate | None
) -> None:
    """Delete objects written by an attempt whose conditional commit did not go through.

    A contended commit runs decide() again on fresh state; when the committed attempt did
    not complete the form (say a STOP won the race), the object an earlier attempt wrote has no
    index entry and no owner: it must not linger as an unreachable copy of patient data.
    """
    committed = set(update.fields.get("record_ids", [])) if update else set()
    for record_id, entry in stored.items():
        if record_id not in committed:
            components.repos.archive.discard_unindexed(entry)


def _apply_effect(
    components: ConversationDeps, identity: PatientIdentity, effect: Effect
) -> IndexEntry | None:
    """Store an archive object (its index entry commits with the conversation) or erase.

    Both are idempotent, as a contended commit may repeat them.
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


def _record(identity: PatientIdentity, fields: Mapping[str, Any]) -> IntakeRecord:
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


def handle_status(components: ConversationDeps, status: StatusUpdate) -> None:
    """Keep failed deliveries visible to support staff; the others need no storage."""
    if status.status == DeliveryStatus.FAILED:
        key = components.repos.conversations.record_failed_status(
            status.identity, status.error_codes, status.timestamp
        )
        logger.warning(
            "message delivery failed",
            extra={"conversation": (key or "")[:12], "error_codes": list(status.error_codes)},
        )
