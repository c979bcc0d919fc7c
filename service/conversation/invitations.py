"""Inviting a patient by phone number: the start template, never to a patient who said STOP."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import phonenumbers

from repositories.conversations import (
    ConversationUpdate,
    StoredConversation,
)
from service.conversation.flow.engine import invite
from service.conversation.flow.questionnaire import load_questionnaire
from service.conversation.ports import ConversationDeps
from service.conversation.reminders import after_invitation
from service.conversation.state import state_from_stored, update_from_state
from service.domain.identity import PatientIdentity
from service.domain.turns import ConversationStatus
from service.errors import ConflictError, InvalidInputError, UnavailableError
from service.whatsapp.graph import (
    GraphError,
    template_payload,
)

logger = logging.getLogger(__name__)


def start_conversation(components: ConversationDeps, to: object, provider_id: str) -> str:
    """Send the start template to a patient and record the invitation; return the phone
    number (E.164 digits). A patient who already wrote with this number keeps their
    conversation, whichever identifier it is filed under."""
    identity = PatientIdentity(phone=normalise_phone(to))
    now = datetime.now(UTC)

    def decide(stored: StoredConversation) -> ConversationUpdate:
        current = state_from_stored(stored)
        if current is not None and current.status == ConversationStatus.OPTED_OUT:
            # The bot promised a patient who wrote STOP no more messages until they write.
            raise ConflictError("this patient opted out; they must write to the clinic first")
        state = invite(load_questionnaire("1"), current)
        update = update_from_state(state, [])
        update.fields.update({"invited_at": now, "invited_by": provider_id})
        # Reminded once more if never answered (nothing changes for a form under way).
        update.fields.update(
            after_invitation(components.config, state, now, stored.identity or identity)
        )
        return update

    key, _ = components.repos.conversations.update_without_message(identity, now, decide)
    try:
        components.graph.send(template_payload(identity, components.config.whatsapp_start_template))
    except GraphError as error:
        # Shown as a failed delivery (staff see it in the portal's invitations) rather than
        # as an invitation that went.
        components.repos.conversations.record_failed_status(
            identity, (error.code or 0,), datetime.now(UTC), source="invitation"
        )
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
