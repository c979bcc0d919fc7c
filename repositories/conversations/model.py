"""The values of a stored conversation (state, updates, queued replies, send results) and the
rules on them that need no I/O: how replies are leased and how drops are counted."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from google.cloud import firestore

from repositories.archive import IndexEntry
from repositories.clients import FIRESTORE_CALL
from repositories.identities import CONVERSATIONS
from service.domain.identity import PatientIdentity, parse_lookup
from service.domain.turns import ConversationStatus
from service.errors import ServiceError

logger = logging.getLogger(__name__)

COLLECTION = CONVERSATIONS
PROCESSED_IDS_KEPT = 200  # Meta redelivers for up to 7 days; far more than a form's messages
SENT_KEPT = 50
# While nothing can be sent (an expired token, a long outage) every message still queues its
# replies; a document must stay far below Firestore's 1 MiB. A sealed reply is at most ~6 KB
# (a 4,096-character body, UTF-8, sealed): 40 of them stay under 250 KB. Past the bound the
# oldest replies go (they answer messages the patient has since followed up), counted and
# logged like every other drop.
MAX_OUTBOX = 40
ATTEMPTS = 20
# Racing processes settle within milliseconds; past this the webhook answers 503 (Meta retries)
# rather than hold a worker thread.
CONTENTION_BUDGET_SECONDS = 5.0
# Each read and commit gives up within seconds when Firestore is unreachable, so the webhook
# answers 503 and Meta retries: the bound every Firestore call of ours has.
CALL = FIRESTORE_CALL


class ConversationIntegrityError(ServiceError):
    """A stored draft or reply failed authentication: never silently reset a patient's form."""

    status = 500
    code = "conversation_integrity"


@dataclass
class StoredConversation:
    key: str
    exists: bool
    fields: dict[str, Any]
    draft: dict[str, Any]
    identity: PatientIdentity | None = None  # as stored, updated with what the message says


@dataclass
class ConversationUpdate:
    fields: dict[str, Any]
    draft: dict[str, Any] | None  # None deletes the draft
    replies: list[dict[str, Any]] = field(default_factory=list)
    drop_outbox: bool = False  # the patient stopped: nothing queued is sent any more
    # Records this change archives: their index entries commit with it, or not at all.
    archived: list[IndexEntry] = field(default_factory=list)


class IndexStager(Protocol):
    """The archive's index, as a conversation commit needs it: staged on the same batch."""

    def write_index_entry(self, batch: firestore.WriteBatch, entry: IndexEntry) -> None: ...


class DropReason(StrEnum):
    """Why a queued reply was given up; support staff read it in `last_drop.reason`."""

    OUTSIDE_WINDOW = "outside_window"  # Meta refused it: 24 h since the patient last wrote
    REJECTED = "rejected"  # Meta refused it for good (an invalid parameter, say)
    WINDOW_CLOSED = "window_closed"  # it kept failing until it could no longer be delivered
    OUTBOX_FULL = "outbox_full"  # the oldest, pushed out of a full outbox


@dataclass(frozen=True)
class SendResult:
    key: str
    wamid: str | None = None
    error_code: int | None = None
    drop: bool = False
    attempted: bool = False  # a send was tried (released replies behind it were not)
    reason: DropReason | None = None  # why a dropped reply was dropped


@dataclass
class Change:
    """What to commit if the conversation is still as it was read."""

    fields: dict[str, Any]
    replace: bool = False  # the whole document: fields not in `fields` are deleted
    archived: list[IndexEntry] = field(default_factory=list)


@dataclass(frozen=True)
class OutboxItem:
    key: str
    payload: dict[str, Any]  # the message without its recipient: see Claim.identity
    attempts: int  # sends tried so far (not claims: a claimed reply may never be tried)
    stored: dict[str, Any] = field(repr=False, default_factory=dict)  # exactly as written


@dataclass(frozen=True)
class Claim:
    """Replies leased to the caller, and whom to send them to (as the conversation knows now)."""

    conversation: str
    identity: PatientIdentity | None
    items: list[OutboxItem] = field(default_factory=list)
    # When the patient last wrote: free-form replies can be delivered for 24 h after it.
    last_inbound_at: datetime | None = None
    # Until when `items` are leased to the caller (None when nothing was leased).
    leased_until: datetime | None = None
    # Replies left queued behind one leased by someone else (or by the caller earlier), and
    # when that lease ends: whoever sends must look again then, or once the holder is done.
    waiting: int = 0
    blocked_until: datetime | None = None
    # Replies passed over because they were leased to the same holder (see claim_replies):
    # this claim may go only once the holder has settled them.
    skipped: tuple[str, ...] = ()


def identity_of(who: PatientIdentity | str) -> PatientIdentity | None:
    """Read a phone number or BSUID as an identity; None for anything else (a key)."""
    if isinstance(who, PatientIdentity):
        return who
    try:
        return parse_lookup(who)
    except ValueError:
        return None


def merged(stored: PatientIdentity | None, newer: PatientIdentity) -> PatientIdentity:
    return newer if stored is None else stored.merged(newer)


@dataclass(frozen=True)
class Leased:
    """What claim_replies leased, and what it left queued behind another lease."""

    items: list[dict[str, Any]]
    leased_until: datetime | None
    waiting: int
    blocked_until: datetime | None
    skipped: tuple[str, ...] = ()


def claim_replies(
    outbox: list[dict[str, Any]], now: datetime, lease: timedelta, holder: str | None = None
) -> Leased:
    """Lease the replies up to the first one leased by someone else (in place).

    Replies go out in order: while an earlier reply is leased (another process is sending it,
    or died holding it), the later ones wait for it rather than overtake it. Replies already
    leased to `holder` (this process's sender, which sends one conversation's claims in the
    order it took them) are passed over, not waited for: the new ones queue behind them.
    """
    claimed, skipped = [], []
    blocked: dict[str, Any] | None = None
    for item in outbox:
        if item.get("claimed_until") and item["claimed_until"] > now:
            if holder is None or item.get("claimed_by") != holder:
                blocked = item
                break
            skipped.append(item["key"])
            continue
        item["claimed_until"] = now + lease
        item["claimed_by"] = holder
        claimed.append(item)
    waiting = len(outbox) - outbox.index(blocked) if blocked is not None else 0
    return Leased(
        claimed,
        now + lease if claimed else None,
        waiting,
        blocked["claimed_until"] if blocked is not None else None,
        tuple(skipped),
    )


def count_drops(
    fields: dict[str, Any],
    count: int,
    reason: DropReason | None,
    now: datetime,
    current: dict[str, Any] | None = None,
) -> None:
    """Add dropped replies to the counts support staff see on the conversation."""
    before = fields.get("dropped_replies", (current or {}).get("dropped_replies", 0))
    fields["dropped_replies"] = before + count
    fields["last_drop"] = {"reason": reason, "at": now}


_IN_FORM = (ConversationStatus.IN_PROGRESS, ConversationStatus.CONFIRMING)


def stamp_progress(before: dict[str, Any], after: dict[str, Any], now: datetime) -> None:
    """Stamp when a form starts and when it completes, for the portal's dashboard (plain
    times, no answers): `form_started_at` when the status enters the form from outside it,
    `completed_at` when it becomes completed."""
    status, previous = after.get("status"), before.get("status")
    if status in _IN_FORM and previous not in _IN_FORM:
        after["form_started_at"] = now
    if status == ConversationStatus.COMPLETED and previous != ConversationStatus.COMPLETED:
        after["completed_at"] = now
