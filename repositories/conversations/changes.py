"""What changes a conversation: a patient's message, an invitation, a changed number or
BSUID, an erased record, a failed delivery, and the move of a conversation named before 0003."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from google.api_core.exceptions import (
    NotFound,
)
from google.cloud import firestore

from repositories.clients import translated
from repositories.conversations.model import (
    CALL,
    Change,
    Claim,
    ConversationUpdate,
    StoredConversation,
    claim_replies,
    merged,
)
from repositories.conversations.store import ConversationStore
from repositories.identities import Located, is_legacy_key
from service.domain.identity import PatientIdentity


class ConversationChanges(ConversationStore):
    """Apply each kind of change to a patient's conversation, once."""

    # -- the per-message read-decide-commit -----------------------------------------------
    def apply_inbound(
        self,
        identity: PatientIdentity,
        message_id: str,
        now: datetime,
        decide: Callable[[StoredConversation], ConversationUpdate],
        lease: timedelta,
        holder: str | None = None,
    ) -> tuple[ConversationUpdate | None, Claim]:
        """Run decide() on the patient's current state and store its result, once per message.

        The same commit leases every sendable reply to the caller (so no second write is
        needed to claim them; `holder` names the caller's sender, see claim_replies), links
        any identifier the conversation did not know yet, and moves a conversation written
        before migration 0003 to its pseudonym. Returns
        (None, claim) for a message already processed. decide() may run more than once when
        processes race, so whatever it does besides returning must be idempotent.
        """

        def attempt(
            located: Located,
        ) -> tuple[tuple[ConversationUpdate | None, Claim], Change | None]:
            stored = self._stored(located)
            stored.identity = merged(stored.identity, identity)
            if message_id in stored.fields.get("processed_ids", []):
                # A redelivery: Meta retries when we did not answer 200, e.g. a process died
                # after the commit; replies it left queued (lease expired) go out now.
                outbox = list(stored.fields.get("outbox", []))
                leased = claim_replies(outbox, now, lease, holder)
                result = (None, self._claim_of(stored, leased))
                return result, Change({"outbox": outbox}) if leased.items else None
            update = decide(stored)
            document = self._document(stored, update, message_id, now)
            leased = claim_replies(document["outbox"], now, lease, holder)
            change = Change(document, replace=True, archived=update.archived)
            return (update, self._claim_of(stored, leased)), change

        return self._read_modify_write(lambda: self._locate(identity, identity), attempt)

    def update_without_message(
        self,
        identity: PatientIdentity,
        now: datetime,
        decide: Callable[[StoredConversation], ConversationUpdate],
    ) -> tuple[str, ConversationUpdate]:
        """Apply a change not caused by a patient message (an invitation, a support action);
        return the conversation's key and the update."""

        def attempt(located: Located) -> tuple[tuple[str, ConversationUpdate], Change]:
            stored = self._stored(located)
            stored.identity = merged(stored.identity, identity)
            update = decide(stored)
            document = self._document(stored, update, None, now)
            return (stored.key, update), Change(document, replace=True)

        return self._read_modify_write(lambda: self._locate(identity, identity), attempt)

    def remind(
        self,
        key: str,
        now: datetime,
        decide: Callable[[StoredConversation], ConversationUpdate | None],
        lease: timedelta,
        holder: str | None = None,
    ) -> tuple[ConversationUpdate | None, Claim]:
        """Apply a reminder decided on the conversation's current state (None: nothing to do),
        leasing what it queues to the caller in the same commit, as apply_inbound does.

        `now` is when the commit happens (the lease starts then), not the moment the rules
        reasoned about. Two runs at once: the second one's decide() sees the first one's
        commit (its precondition fails, it reads again), so a reminder is queued once.
        """
        reference = self._collection.document(key)

        def attempt(
            located: Located,
        ) -> tuple[tuple[ConversationUpdate | None, Claim], Change | None]:
            if not located.snapshot.exists:
                return (None, Claim(key, None)), None
            stored = self._stored(located)
            update = decide(stored)
            if update is None:
                return (None, Claim(key, stored.identity)), None
            document = self._document(stored, update, None, now)
            leased = claim_replies(document["outbox"], now, lease, holder)
            change = Change(document, replace=True)
            return (update, self._claim_of(stored, leased)), change

        return self._read_modify_write(lambda: Located(key, reference.get(**CALL)), attempt)

    def relink(
        self, previous: PatientIdentity, current: PatientIdentity, event_id: str, now: datetime
    ) -> str | None:
        """Follow a changed number or BSUID (Meta's system messages): the conversation found
        by `previous` is from now on also found, and answered, by `current`. Returns its key,
        or None when the patient has no conversation; idempotent per event id."""

        def attempt(located: Located) -> tuple[str | None, Change | None]:
            if not located.current.exists:
                return None, None
            stored = self._stored(located)
            if event_id in stored.fields.get("processed_ids", []):
                return stored.key, None
            stored.identity = merged(stored.identity, current)
            document = self._document(stored, ConversationUpdate({}, stored.draft), event_id, now)
            return stored.key, Change(document, replace=True)

        return self._read_modify_write(lambda: self._locate(previous, current), attempt)

    def forget_record(self, identity: PatientIdentity, record_id: str, now: datetime) -> str | None:
        """Stop a conversation naming an erased record; return its key, or None when no
        conversation names it."""

        key = self.find(identity)
        if key is None:
            return None
        reference = self._collection.document(key)

        def attempt(located: Located) -> tuple[str | None, Change | None]:
            data = (located.snapshot.to_dict() or {}) if located.snapshot.exists else {}
            named = data.get("record_ids", [])
            if record_id not in named and data.get("record_id") != record_id:
                return None, None
            record_ids = [item for item in named if item != record_id]
            changes = {
                "record_ids": record_ids,
                "record_id": record_ids[-1] if record_ids else None,
                "updated_at": now,
                # Never a reminder after an erasure, whatever the conversation was doing.
                "next_reminder_at": None,
                "next_reminder": None,
            }
            return key, Change(changes)

        return self._read_modify_write(lambda: Located(key, reference.get(**CALL)), attempt)

    def legacy_keys(self) -> list[str]:
        """The ids of conversations still named by a phone number (before migration 0003)."""
        return [key for key in self.keys() if is_legacy_key(key)]

    def move_legacy(self, phone: str, now: datetime) -> str | None:
        """Move a conversation named by a phone number to its pseudonym, draft, queued replies
        and timestamps as they are; return the new key, or None when there was nothing left to
        move (another process moved it on the patient's next message, which does the same)."""

        def attempt(located: Located) -> tuple[str | None, Change | None]:
            if located.source is None:
                return None, None
            stored = self._stored(located)
            stored.identity = merged(stored.identity, PatientIdentity(phone=phone))
            document = self._document(stored, ConversationUpdate({}, stored.draft), None, now)
            document["updated_at"] = stored.fields.get("updated_at", now)
            return located.key, Change(document, replace=True)

        identity = PatientIdentity(phone=phone)
        return self._read_modify_write(lambda: self._locate(identity, identity), attempt)

    def record_failed_status(
        self,
        identity: PatientIdentity,
        codes: tuple[int, ...],
        at: datetime,
        source: str = "status",
    ) -> str | None:
        """A `failed` status update from Meta (or an invitation the Graph API refused):
        visible to support staff on the conversation. Returns the conversation's key, or
        None when the patient has none."""
        located = self._located(identity)
        if located is None or not located.current.exists:
            return None
        changes = {
            "failed_deliveries": firestore.Increment(1),
            "last_error": {"code": codes[0] if codes else None, "at": at, "source": source},
        }
        with translated("Firestore"):
            try:
                located.current.reference.update(changes)
            except NotFound:
                return None  # moved or erased since it was read
        return located.key
