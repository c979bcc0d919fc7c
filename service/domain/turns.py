"""One turn of a conversation, as the flow engine takes and returns it: the patient's message
(Inbound), the state, the replies and effects (Step). Plain frozen data, no behaviour, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class ConversationStatus(StrEnum):
    """Where a patient is; stored by value in the conversation's `status` field."""

    NEW = "new"
    INVITED = "invited"
    IN_PROGRESS = "in_progress"
    CONFIRMING = "confirming"
    COMPLETED = "completed"
    OPTED_OUT = "opted_out"


# What a patient's message is to the engine, and what the caller must do after a turn.
InboundKind = Literal["text", "choice", "unsupported"]
EffectKind = Literal["archive", "erase_records"]


@dataclass(frozen=True)
class Inbound:
    """One message from the patient, reduced to what the engine reads.

    `kind` is "text", "choice" (a reply button, list row or template quick-reply button) or
    "unsupported" (image, audio, video, document, sticker, location, contacts, reaction, unknown).
    """

    kind: InboundKind
    text: str = ""  # the text body, or the title of the chosen button or row
    choice_id: str = ""  # the id of the chosen button or row; "" for text


@dataclass(frozen=True)
class Button:
    """A reply button: at most 3 per message, titles at most 20 characters and unique."""

    id: str
    title: str


@dataclass(frozen=True)
class ListRow:
    """A list message row: at most 10 per message, title at most 24, description at most 72."""

    id: str
    title: str
    description: str = ""


@dataclass(frozen=True)
class Reply:
    """One outbound message: plain text, reply buttons, or a one-section list."""

    body: str
    buttons: tuple[Button, ...] = ()
    list_button: str = ""  # the label of the button that opens the list of rows
    rows: tuple[ListRow, ...] = ()


@dataclass(frozen=True)
class ConversationState:
    """Where one patient is in the form; the caller stores it (answers encrypted)."""

    status: ConversationStatus = ConversationStatus.NEW
    step: str | None = None  # the id of the question being asked
    language: str | None = None  # "en" | "es"
    questionnaire_version: str = "1"
    invalid_answers: int = 0  # re-asks in the current form, for support staff
    # Draft answers: patient data, JSON-serialisable values only (str, list[str], ISO dates).
    answers: Mapping[str, Any] = field(default_factory=dict)
    history: tuple[str, ...] = ()  # questions answered on the way here, for "back"
    returning_to_summary: bool = False  # editing one answer from the summary
    pending_command: str | None = None  # "erase" while waiting for "delete my data" to be confirmed
    draft_record_id: str | None = None  # chosen when a form starts, so a redelivery reuses it
    consent_at: str | None = None  # ISO 8601 UTC instant of consent
    record_ids: tuple[str, ...] = ()  # records this patient completed (ids only, no PHI)


@dataclass(frozen=True)
class Effect:
    """Something the caller must do besides saving the state and sending the replies.

    "archive": `record` holds every IntakeRecord field but wa_id, as JSON-ready values.
    "erase_records": `record_ids` lists the archived records to erase.
    """

    kind: EffectKind
    record: Mapping[str, Any] | None = None
    record_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    """The outcome of one inbound message: the new state, the replies to send, the effects."""

    state: ConversationState
    replies: tuple[Reply, ...]
    effects: tuple[Effect, ...] = ()
