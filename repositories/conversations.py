"""Conversation state: `conversations/{key}`, one read and one conditional commit per message.

`key` is a pseudonym of the patient (see repositories/identities.py); who they are (phone,
BSUID) is stored only sealed, in the `identity` field. Plain fields are what support staff
read in the console (status, step, language, timestamps, invalid-answer count, last error).
The patient's draft answers and every queued reply (which may repeat answers) are
Tink-encrypted, associated data = the document path.

Changes are optimistic, not Firestore transactions: read the document, decide, then commit the
new state only if the document is unchanged since the read (its update time, or that it still
does not exist), and run again when another process won the race. A transaction holds a lock
on the document from its first read; when a process dies holding it (a SIGKILLed worker, an
instance shut down mid-request), Firestore keeps the lock until the transaction idles out
after 60 s, and every redelivery meanwhile waits and aborts. A precondition leaves nothing
behind.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import tink
from google.api_core.exceptions import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    ServiceUnavailable,
)
from google.api_core.retry import Retry, if_exception_type
from google.cloud import firestore

from repositories.clients import TRANSIENT_ERRORS, unavailable
from repositories.identities import CONVERSATIONS, IdentityResolver, Located, is_legacy_key
from service.domain.identity import PatientIdentity, Pseudonyms, is_bsuid, is_phone
from service.errors import ServiceError, UnavailableError
from service.keys.crypto import KeyMaterial, key_id_of

logger = logging.getLogger(__name__)

COLLECTION = CONVERSATIONS
_PROCESSED_IDS_KEPT = 200  # Meta redelivers for up to 7 days; far more than a form's messages
_SENT_KEPT = 50
# While nothing can be sent (an expired token, a long outage) every message still queues its
# replies; a document must stay far below Firestore's 1 MiB. A sealed reply is at most ~6 KB
# (a 4,096-character body, UTF-8, sealed): 40 of them stay under 250 KB. Past the bound the
# oldest replies go (they answer messages the patient has since followed up), counted and
# logged like every other drop.
MAX_OUTBOX = 40
_ATTEMPTS = 20
# Racing processes settle within milliseconds; past this the webhook answers 503 (Meta retries)
# rather than hold a worker thread.
_CONTENTION_BUDGET_SECONDS = 5.0
# Each read and commit gives up within seconds when Firestore is unreachable (the library's
# default retries for 60 s), so the webhook answers 503 and Meta retries.
_CALL_TIMEOUT_SECONDS = 5.0
_CALL_RETRY = Retry(
    predicate=if_exception_type(ServiceUnavailable, DeadlineExceeded),
    timeout=_CALL_TIMEOUT_SECONDS,
)
_CALL = {"retry": _CALL_RETRY, "timeout": _CALL_TIMEOUT_SECONDS}


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
    # Writes to other documents that must commit with this one (e.g. an archive index entry);
    # each stages its write on the batch it is given.
    also_write: list[Callable[[firestore.WriteBatch], None]] = field(default_factory=list)


@dataclass(frozen=True)
class SendResult:
    key: str
    wamid: str | None = None
    error_code: int | None = None
    drop: bool = False
    attempted: bool = False  # a send was tried (released replies behind it were not)
    reason: str | None = None  # why a dropped reply was dropped, for support staff


@dataclass
class _Change:
    """What to commit if the conversation is still as it was read."""

    fields: dict[str, Any]
    replace: bool = False  # the whole document: fields not in `fields` are deleted
    also_write: list[Callable[[firestore.WriteBatch], None]] = field(default_factory=list)


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


class ConversationRepository:
    """Conditional commits over conversation documents, with the sealed draft and outbox."""

    def __init__(self, client: firestore.Client, keys: KeyMaterial, pseudonyms: Pseudonyms) -> None:
        self._client = client
        self._collection = client.collection(COLLECTION)
        self._keys = keys
        self._identities = IdentityResolver(client, pseudonyms, self._sealed_identity, _CALL)

    def _path(self, key: str) -> str:
        return f"{COLLECTION}/{key}"

    # -- sealing -------------------------------------------------------------------------
    def _seal(self, value: Any, associated: str) -> bytes:
        plaintext = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
        return self._keys.keyring().encrypt(plaintext, associated.encode())

    def _unseal(self, sealed: bytes, associated: str) -> Any:
        keyring = self._keys.keyring_for(key_id_of(sealed))
        try:
            return json.loads(keyring.decrypt(sealed, associated.encode()))
        except tink.TinkError:
            key = associated.split("/", 1)[-1].split("#", 1)[0]
            # A document written before migration 0003 is named by the phone number.
            name = "a phone-keyed conversation" if is_legacy_key(key) else key[:12]
            logger.error(
                "stored conversation state failed authentication", extra={"conversation": name}
            )
            raise ConversationIntegrityError(
                "a stored conversation failed authentication"
            ) from None

    def _sealed_identity(self, snapshot: firestore.DocumentSnapshot) -> PatientIdentity | None:
        if is_legacy_key(snapshot.id):
            return PatientIdentity(phone=snapshot.id)
        sealed = (snapshot.to_dict() or {}).get("identity")
        if not sealed:
            return None
        return PatientIdentity.from_dict(
            self._unseal(sealed, f"{snapshot.reference.path}#identity")
        )

    def _stored(self, located: Located) -> StoredConversation:
        """Open the conversation's current state; a document being moved is re-sealed for its
        new path (associated data names the document)."""
        snapshot = located.current
        if not snapshot.exists:
            return StoredConversation(located.key, False, {}, {})
        data = snapshot.to_dict() or {}
        identity = self._sealed_identity(snapshot)
        data.pop("identity", None)
        sealed = data.pop("draft", None)
        source = snapshot.reference.path
        draft = self._unseal(sealed, source) if sealed else {}
        if source != self._path(located.key):
            data["outbox"] = [
                self._reseal_item(item, source, located.key) for item in data.get("outbox", [])
            ]
        for folded in located.folded:  # keep who invited the patient, and when
            invitation = folded.to_dict() or {}
            for name in ("invited_at", "invited_by"):
                if name not in data and invitation.get(name) is not None:
                    data[name] = invitation[name]
        return StoredConversation(located.key, True, data, draft, identity)

    def _reseal_item(self, item: dict[str, Any], source: str, key: str) -> dict[str, Any]:
        suffix = f"#outbox:{item['key']}"
        payload = self._unseal(item["sealed"], source + suffix)
        return {**item, "sealed": self._seal(payload, self._path(key) + suffix)}

    # -- reads ---------------------------------------------------------------------------
    def find(self, who: PatientIdentity | str) -> str | None:
        """Return the key of a patient's conversation (given an identity, a phone number's
        digits, a BSUID or a key), or None when they have none."""
        located = self._located(who)
        return located.key if located is not None and located.current.exists else None

    def get(self, who: PatientIdentity | str) -> StoredConversation:
        located = self._located(who)
        if located is None:
            return StoredConversation("", False, {}, {})
        return self._stored(located)

    def raw(self, who: PatientIdentity | str) -> dict[str, Any] | None:
        """The document exactly as stored (what the Firestore console shows)."""
        located = self._located(who)
        if located is None or not located.current.exists:
            return None
        return located.current.to_dict()

    def _located(self, who: PatientIdentity | str) -> Located | None:
        identity = _identity_of(who)
        try:
            if identity is not None:
                return self._identities.locate(identity)
            assert isinstance(who, str)
            snapshot = self._collection.document(who).get(**_CALL)
        except TRANSIENT_ERRORS as error:
            raise unavailable("Firestore", error) from error
        return Located(who, snapshot) if snapshot.exists else None

    def with_pending_outbox(self, limit: int = 500) -> list[str]:
        query = self._collection.where(filter=firestore.FieldFilter("outbox_pending", ">", 0))
        return [snapshot.id for snapshot in query.limit(limit).stream()]

    def keys(self) -> list[str]:
        """Every conversation's document id (for migrations and scans)."""
        return [reference.id for reference in self._collection.list_documents()]

    # -- the per-message read-decide-commit -----------------------------------------------
    def apply_inbound(
        self,
        identity: PatientIdentity,
        message_id: str,
        now: datetime,
        decide: Callable[[StoredConversation], ConversationUpdate],
        lease: timedelta,
    ) -> tuple[ConversationUpdate | None, Claim]:
        """Run decide() on the patient's current state and store its result, once per message.

        The same commit leases every sendable reply to the caller (so no second write is
        needed to claim them), links any identifier the conversation did not know yet, and
        moves a conversation written before migration 0003 to its pseudonym. Returns
        (None, claim) for a message already processed. decide() may run more than once when
        processes race, so whatever it does besides returning must be idempotent.
        """

        def attempt(located: Located):
            stored = self._stored(located)
            stored.identity = _merged(stored.identity, identity)
            if message_id in stored.fields.get("processed_ids", []):
                # A redelivery: Meta retries when we did not answer 200, e.g. a process died
                # after the commit; replies it left queued (lease expired) go out now.
                outbox = list(stored.fields.get("outbox", []))
                claimed = _claim(outbox, now, lease)
                result = (None, self._claim_of(stored, claimed))
                return result, _Change({"outbox": outbox}) if claimed else None
            update = decide(stored)
            document = self._document(stored, update, message_id, now)
            claimed = _claim(document["outbox"], now, lease)
            change = _Change(document, replace=True, also_write=update.also_write)
            return (update, self._claim_of(stored, claimed)), change

        return self._read_modify_write(lambda: self._locate(identity, identity), attempt)

    def _locate(self, lookup: PatientIdentity, target: PatientIdentity) -> Located:
        located = self._identities.locate(lookup, target)
        assert located is not None  # with a target, locate() always names a place
        return located

    def _claim_of(self, stored: StoredConversation, items: list[dict[str, Any]]) -> Claim:
        last = stored.fields.get("last_inbound_at")
        return Claim(stored.key, stored.identity, self._opened(stored.key, items), last)

    def _read_modify_write(
        self,
        locate: Callable[[], Located],
        attempt: Callable[[Located], tuple[Any, _Change | None]],
    ) -> Any:
        """Read the documents, let attempt() decide, commit its change if nobody wrote
        meanwhile; attempt() runs again on fresh state when another process won the race."""
        deadline = time.monotonic() + _CONTENTION_BUDGET_SECONDS
        key = None
        for number in range(_ATTEMPTS):
            try:
                located = locate()
                key = located.key
                result, change = attempt(located)
                if change is None:
                    return result
                batch = self._client.batch()
                self._stage(batch, located, change)
                batch.commit(**_CALL)
                return result
            except (FailedPrecondition, AlreadyExists, NotFound):
                if time.monotonic() > deadline:
                    break
                time.sleep(random.uniform(0, 0.005 * 2 ** min(number, 6)))  # jittered backoff
            except TRANSIENT_ERRORS as error:
                raise unavailable("Firestore", error) from error
        logger.warning(
            "conversation update lost every race", extra={"conversation": (key or "")[:12]}
        )
        raise UnavailableError("the conversation is busy; try again")

    def _stage(self, batch: firestore.WriteBatch, located: Located, change: _Change) -> None:
        """Stage the change on the condition that every document read is still as it was."""
        snapshot = located.snapshot
        if located.source is not None and not change.replace:
            # Only a full change moves a conversation; a partial one applies where it is.
            snapshot = located.source
        if not snapshot.exists:
            batch.create(snapshot.reference, change.fields)  # fails if another process did
        else:
            fields = dict(change.fields)
            if change.replace:
                for name in (snapshot.to_dict() or {}).keys() - fields.keys():
                    fields[name] = firestore.DELETE_FIELD
            unchanged = self._client.write_option(last_update_time=snapshot.update_time)
            batch.update(snapshot.reference, fields, option=unchanged)
        if change.replace:
            self._identities.stage(batch, located, change.fields.get("updated_at"))
        for write in change.also_write:
            write(batch)

    def _document(
        self,
        stored: StoredConversation,
        update: ConversationUpdate,
        message_id: str | None,
        now: datetime,
    ) -> dict[str, Any]:
        path = self._path(stored.key)
        fields = dict(stored.fields)
        fields.update(update.fields)
        fields.setdefault("created_at", now)
        fields["updated_at"] = now
        if message_id is not None:
            processed = list(fields.get("processed_ids", [])) + [message_id]
            fields["processed_ids"] = processed[-_PROCESSED_IDS_KEPT:]
        outbox = [] if update.drop_outbox else list(fields.get("outbox", []))
        overflow = len(outbox) + len(update.replies) - MAX_OUTBOX
        if overflow > 0:
            outbox = outbox[overflow:]
            _count_drops(fields, overflow, "outbox_full", now)
            logger.warning(
                "replies dropped",
                extra={"conversation": stored.key[:12], "reason": "outbox_full", "count": overflow},
            )
        for index, payload in enumerate(update.replies[-MAX_OUTBOX:]):
            key = f"{message_id}:{index}" if message_id else f"system:{now.timestamp()}:{index}"
            outbox.append(
                {
                    "key": key,
                    "sealed": self._seal(payload, f"{path}#outbox:{key}"),
                    "attempts": 0,
                    "claimed_until": None,
                    "queued_at": now,
                }
            )
        fields["outbox"] = outbox
        fields["outbox_pending"] = len(outbox)
        fields["sent"] = list(fields.get("sent", []))[-_SENT_KEPT:]
        if stored.identity is not None:
            fields["identity"] = self._seal(stored.identity.to_dict(), f"{path}#identity")
        if update.draft:
            fields["draft"] = self._seal(update.draft, path)
        else:
            fields.pop("draft", None)
        return fields

    def update_without_message(
        self,
        identity: PatientIdentity,
        now: datetime,
        decide: Callable[[StoredConversation], ConversationUpdate],
    ) -> tuple[str, ConversationUpdate]:
        """Apply a change not caused by a patient message (an invitation, a support action);
        return the conversation's key and the update."""

        def attempt(located: Located):
            stored = self._stored(located)
            stored.identity = _merged(stored.identity, identity)
            update = decide(stored)
            document = self._document(stored, update, None, now)
            return (stored.key, update), _Change(document, replace=True)

        return self._read_modify_write(lambda: self._locate(identity, identity), attempt)

    def relink(
        self, previous: PatientIdentity, current: PatientIdentity, event_id: str, now: datetime
    ) -> str | None:
        """Follow a changed number or BSUID (Meta's system messages): the conversation found
        by `previous` is from now on also found, and answered, by `current`. Returns its key,
        or None when the patient has no conversation; idempotent per event id."""

        def attempt(located: Located):
            if not located.current.exists:
                return None, None
            stored = self._stored(located)
            if event_id in stored.fields.get("processed_ids", []):
                return stored.key, None
            stored.identity = _merged(stored.identity, current)
            document = self._document(stored, ConversationUpdate({}, stored.draft), event_id, now)
            return stored.key, _Change(document, replace=True)

        return self._read_modify_write(lambda: self._locate(previous, current), attempt)

    def forget_record(self, identity: PatientIdentity, record_id: str, now: datetime) -> str | None:
        """Stop a conversation naming an erased record; return its key, or None when no
        conversation names it."""

        key = self.find(identity)
        if key is None:
            return None
        reference = self._collection.document(key)

        def attempt(located: Located):
            data = (located.snapshot.to_dict() or {}) if located.snapshot.exists else {}
            named = data.get("record_ids", [])
            if record_id not in named and data.get("record_id") != record_id:
                return None, None
            record_ids = [item for item in named if item != record_id]
            changes = {
                "record_ids": record_ids,
                "record_id": record_ids[-1] if record_ids else None,
                "updated_at": now,
            }
            return key, _Change(changes)

        return self._read_modify_write(lambda: Located(key, reference.get(**_CALL)), attempt)

    def legacy_keys(self) -> list[str]:
        """The ids of conversations still named by a phone number (before migration 0003)."""
        return [key for key in self.keys() if is_legacy_key(key)]

    def move_legacy(self, phone: str, now: datetime) -> str | None:
        """Move a conversation named by a phone number to its pseudonym, draft, queued replies
        and timestamps as they are; return the new key, or None when there was nothing left to
        move (another process moved it on the patient's next message, which does the same)."""

        def attempt(located: Located):
            if located.source is None:
                return None, None
            stored = self._stored(located)
            stored.identity = _merged(stored.identity, PatientIdentity(phone=phone))
            document = self._document(stored, ConversationUpdate({}, stored.draft), None, now)
            document["updated_at"] = stored.fields.get("updated_at", now)
            return located.key, _Change(document, replace=True)

        identity = PatientIdentity(phone=phone)
        return self._read_modify_write(lambda: self._locate(identity, identity), attempt)

    # -- the outbox ----------------------------------------------------------------------
    def _opened(self, key: str, items: list[dict[str, Any]]) -> list[OutboxItem]:
        path = self._path(key)
        return [
            OutboxItem(
                item["key"],
                self._unseal(item["sealed"], f"{path}#outbox:{item['key']}"),
                item["attempts"],
                dict(item),
            )
            for item in items
        ]

    def claim_outbox(self, key: str, now: datetime, lease: timedelta) -> Claim:
        """Lease the unsent replies so one process sends them while others skip them."""
        reference = self._collection.document(key)

        def attempt(located: Located):
            if not located.snapshot.exists:
                return Claim(key, None), None
            outbox = (located.snapshot.to_dict() or {}).get("outbox", [])
            claimed = _claim(outbox, now, lease)
            change = _Change({"outbox": outbox, "outbox_pending": len(outbox)})
            data = located.snapshot.to_dict() or {}
            claim = Claim(
                key,
                self._sealed_identity(located.snapshot),
                self._opened(key, claimed),
                data.get("last_inbound_at"),
            )
            return claim, change if claimed else None

        return self._read_modify_write(lambda: Located(key, reference.get(**_CALL)), attempt)

    def settle_outbox(
        self, key: str, now: datetime, items: list[OutboxItem], results: list[SendResult]
    ) -> None:
        """Record a round of sends: acknowledged (wamid) and dropped replies leave the outbox;
        the others are released for a later attempt."""
        if not results:
            return
        if all(result.wamid or result.drop for result in results):
            self._remove_settled(key, items, results, now)
        else:
            self._settle_conditionally(key, now, results)

    def _remove_settled(
        self, key: str, items: list[OutboxItem], results: list[SendResult], now: datetime
    ) -> None:
        """One plain write instead of a read-decide-commit: remove the exact items we leased.

        An item changed meanwhile (re-leased after its lease ran out) is simply not removed;
        the count is recomputed by the next read-decide-commit on the document.
        """
        settled = {result.key for result in results}
        removed = [item.stored for item in items if item.key in settled]
        changes: dict[str, Any] = {
            "outbox": firestore.ArrayRemove(removed),
            "outbox_pending": firestore.Increment(-len(removed)),
            "updated_at": now,
        }
        acknowledged = [{"key": r.key, "wamid": r.wamid} for r in results if r.wamid]
        if acknowledged:
            changes["sent"] = firestore.ArrayUnion(acknowledged)
        errors = [result.error_code for result in results if result.error_code is not None]
        if errors:
            changes["last_error"] = {"code": errors[-1], "at": now, "source": "send"}
        dropped = [result for result in results if result.drop]
        if dropped:
            changes["dropped_replies"] = firestore.Increment(len(dropped))
            changes["last_drop"] = {"reason": dropped[-1].reason, "at": now}
        try:
            self._collection.document(key).update(changes)
        except NotFound:
            pass  # moved or erased meanwhile: nothing of it is left to settle here
        except TRANSIENT_ERRORS as error:
            raise unavailable("Firestore", error) from error

    def _settle_conditionally(self, key: str, now: datetime, results: list[SendResult]) -> None:
        reference = self._collection.document(key)
        by_key = {result.key: result for result in results}

        def attempt(located: Located):
            snapshot = located.snapshot
            if not snapshot.exists:
                return None, None
            data = snapshot.to_dict() or {}
            outbox, sent = [], list(data.get("sent", []))
            changes: dict[str, Any] = {}
            for item in data.get("outbox", []):
                result = by_key.get(item["key"])
                if result is None:
                    outbox.append(item)
                elif result.wamid:
                    sent.append({"key": item["key"], "wamid": result.wamid})
                elif result.drop:
                    _count_drops(changes, 1, result.reason, now, data)
                else:
                    tried = item.get("attempts", 0) + (1 if result.attempted else 0)
                    outbox.append({**item, "claimed_until": None, "attempts": tried})
            changes.update(
                {"outbox": outbox, "outbox_pending": len(outbox), "sent": sent[-_SENT_KEPT:]}
            )
            errors = [result.error_code for result in results if result.error_code is not None]
            if errors:
                changes["last_error"] = {"code": errors[-1], "at": now, "source": "send"}
            return None, _Change(changes)

        self._read_modify_write(lambda: Located(key, reference.get(**_CALL)), attempt)

    def record_failed_status(
        self, identity: PatientIdentity, codes: tuple[int, ...], at: datetime
    ) -> str | None:
        """A `failed` status update from Meta: visible to support staff on the conversation.
        Returns the conversation's key, or None when the patient has none."""
        located = self._located(identity)
        if located is None or not located.current.exists:
            return None
        changes = {
            "failed_deliveries": firestore.Increment(1),
            "last_error": {"code": codes[0] if codes else None, "at": at, "source": "status"},
        }
        try:
            located.current.reference.update(changes)
        except NotFound:
            return None  # moved or erased since it was read
        except TRANSIENT_ERRORS as error:
            raise unavailable("Firestore", error) from error
        return located.key


def _identity_of(who: PatientIdentity | str) -> PatientIdentity | None:
    if isinstance(who, PatientIdentity):
        return who
    if is_phone(who):
        return PatientIdentity(phone=who)
    if is_bsuid(who):
        return PatientIdentity(bsuid=who)
    return None


def _merged(stored: PatientIdentity | None, newer: PatientIdentity) -> PatientIdentity:
    return newer if stored is None else stored.merged(newer)


def _claim(outbox: list[dict[str, Any]], now: datetime, lease: timedelta) -> list[dict[str, Any]]:
    """Lease the replies up to the first one leased by someone else (in place); return them.

    Replies go out in order: while an earlier reply is leased (another process is sending it,
    or died holding it), the later ones wait for it rather than overtake it.
    """
    claimed = []
    for item in outbox:
        if item.get("claimed_until") and item["claimed_until"] > now:
            break
        item["claimed_until"] = now + lease
        claimed.append(item)
    return claimed


def _count_drops(
    fields: dict[str, Any],
    count: int,
    reason: str | None,
    now: datetime,
    current: dict[str, Any] | None = None,
) -> None:
    """Add dropped replies to the counts support staff see on the conversation."""
    before = fields.get("dropped_replies", (current or {}).get("dropped_replies", 0))
    fields["dropped_replies"] = before + count
    fields["last_drop"] = {"reason": reason, "at": now}
