"""Between the engine's state and the stored conversation: plain fields support staff see,
and the draft that is stored sealed."""

from __future__ import annotations

from typing import Any

from repositories.conversations import (
    ConversationUpdate,
    StoredConversation,
)
from service.domain.turns import ConversationState

DRAFT_KEYS = (
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
        # As stored, a str: equal to its ConversationStatus, or a status only a newer version
        # knows, which the engine reads as no form under way.
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
    draft = {key: _jsonable(getattr(state, key)) for key in DRAFT_KEYS}
    meaningful = any(draft[key] for key in DRAFT_KEYS)
    return ConversationUpdate(fields=fields, draft=draft if meaningful else None, replies=replies)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value
