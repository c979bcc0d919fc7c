"""What support staff may see of a conversation: where a patient is stuck, never who they are
or what they answered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.conversation.ports import ConversationDeps
from service.domain.identity import PatientIdentity, parse_lookup
from service.errors import InvalidInputError, NotFoundError

SUPPORT_FIELDS = (
    "status",
    "step",
    "language",
    "created_at",
    "updated_at",
    "last_inbound_at",
    "invited_at",
    "invalid_answers",
    "outbox_pending",
    "failed_deliveries",
    "last_error",
    "dropped_replies",
    "last_drop",
    "record_id",
)


def support_fields(stored: dict[str, Any]) -> dict[str, Any]:
    """Return the plain fields of a stored conversation, JSON-ready; never a sealed one."""
    return {name: _plain(stored.get(name)) for name in SUPPORT_FIELDS}


def find_conversation(components: ConversationDeps, who: str | PatientIdentity) -> dict[str, Any]:
    """Find a patient's conversation by phone number or BSUID; return its document id (the
    pseudonym shown in the Firestore console) and its plain fields."""
    try:
        identity = who if isinstance(who, PatientIdentity) else parse_lookup(who)
    except ValueError as error:
        raise InvalidInputError(str(error)) from None
    found = components.repos.conversations.document(identity)
    if found is None:
        raise NotFoundError("no conversation for that patient")
    key, stored = found
    return {"conversation": key, "fields": support_fields(stored)}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items() if not isinstance(item, bytes)}
    return None if isinstance(value, bytes) else value
