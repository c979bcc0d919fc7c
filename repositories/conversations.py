"""Conversation state: `conversations/{wa_id}`, one read and one conditional commit per message.

Plain fields are what support staff read in the console (status, step, language, timestamps,
invalid-answer count, last error). The patient's draft answers and every queued reply (which
may repeat answers) are Tink-encrypted, associated data = the document path.

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
    ServiceUnavailable,
)
from google.api_core.retry import Retry, if_exception_type
from google.cloud import firestore

from repositories.clients import TRANSIENT_ERRORS, unavailable
from service.crypto import KeyMaterial, key_id_of
from service.errors import ServiceError, UnavailableError
from service.logging import mask_phone

logger = logging.getLogger(__name__)

COLLECTION = "conversations"
_PROCESSED_IDS_KEPT = 200  # Meta redelivers for up to 7 days; far more than a form's messages
_SENT_KEPT = 50
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


class ConversationIntegrityError(ServiceError):
    """A stored draft or reply failed authentication: never silently reset a patient's form."""

    status = 500
    code = "conversation_integrity"


@dataclass
class StoredConversation:
    wa_id: str
    exists: bool
    fields: dict[str, Any]
    draft: dict[str, Any]


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


@dataclass
class _Change:
    """What to commit if the conversation is still as it was read."""

    fields: dict[str, Any]
    replace: bool = False  # the whole document: fields not in `fields` are deleted
    also_write: list[Callable[[firestore.WriteBatch], None]] = field(default_factory=list)


@dataclass(frozen=True)
class OutboxItem:
    key: str
    payload: dict[str, Any]
    attempts: int
    stored: dict[str, Any] = field(repr=False, default_factory=dict)  # exactly as written


class ConversationRepository:
    """Transactions over conversation documents, with the encrypted draft and outbox."""

    def __init__(self, client: firestore.Client, keys: KeyMaterial) -> None:
        self._client = client
        self._collection = client.collection(COLLECTION)
        self._keys = keys

    def _path(self, wa_id: str) -> str:
        return f"{COLLECTION}/{wa_id}"

    # -- sealing -------------------------------------------------------------------------
    def _seal(self, value: Any, associated: str) -> bytes:
        plaintext = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
        return self._keys.keyring().encrypt(plaintext, associated.encode())

    def _unseal(self, sealed: bytes, associated: str) -> Any:
        keyring = self._keys.keyring_for(key_id_of(sealed))
        try:
            return json.loads(keyring.decrypt(sealed, associated.encode()))
        except tink.TinkError:
            # The path holds the phone number: it stays out of the message (which may be
            # returned to a caller); the log line masks it.
            logger.error(
                "stored conversation state failed authentication",
                extra={"wa_id": mask_phone(associated.split("/", 1)[-1][:20])},
            )
            raise ConversationIntegrityError(
                "a stored conversation failed authentication"
            ) from None

    def _stored(self, wa_id: str, snapshot: firestore.DocumentSnapshot) -> StoredConversation:
        if not snapshot.exists:
            return StoredConversation(wa_id, False, {}, {})
        data = snapshot.to_dict() or {}
        sealed = data.pop("draft", None)
        draft = self._unseal(sealed, self._path(wa_id)) if sealed else {}
        return StoredConversation(wa_id, True, data, draft)

    # -- reads ---------------------------------------------------------------------------
    def get(self, wa_id: str) -> StoredConversation:
        try:
            snapshot = self._collection.document(wa_id).get()
        except TRANSIENT_ERRORS as error:
            raise unavailable("Firestore", error) from error
        return self._stored(wa_id, snapshot)

    def raw(self, wa_id: str) -> dict[str, Any] | None:
        """The document exactly as stored (what the Firestore console shows)."""
        snapshot = self._collection.document(wa_id).get()
        return snapshot.to_dict() if snapshot.exists else None

    def with_pending_outbox(self, limit: int = 500) -> list[str]:
        query = self._collection.where(filter=firestore.FieldFilter("outbox_pending", ">", 0))
        return [snapshot.id for snapshot in query.limit(limit).stream()]

    # -- the per-message read-decide-commit -----------------------------------------------
    def apply_inbound(
        self,
        wa_id: str,
        message_id: str,
        now: datetime,
        decide: Callable[[StoredConversation], ConversationUpdate],
        lease: timedelta,
    ) -> tuple[ConversationUpdate | None, list[OutboxItem]]:
        """Run decide() on the current state and store its result, once per message id.

        The same commit leases every sendable reply to the caller (so no second write is
        needed to claim them). Returns (None, []) for a message already processed. decide()
        may run more than once when processes race, so whatever it does besides returning
        must be idempotent.
        """
        reference = self._collection.document(wa_id)

        def attempt(snapshot: firestore.DocumentSnapshot):
            stored = self._stored(wa_id, snapshot)
            if message_id in stored.fields.get("processed_ids", []):
                # A redelivery: Meta retries when we did not answer 200, e.g. a process died
                # after the commit; replies it left queued (lease expired) go out now.
                outbox = list(stored.fields.get("outbox", []))
                claimed = _claim(outbox, now, lease)
                return (None, claimed), _Change({"outbox": outbox}) if claimed else None
            update = decide(stored)
            document = self._document(stored, update, message_id, now)
            claimed = _claim(document["outbox"], now, lease)
            return (update, claimed), _Change(document, replace=True, also_write=update.also_write)

        update, claimed = self._read_modify_write(reference, attempt)
        return update, self._opened(wa_id, claimed)

    def _read_modify_write(
        self,
        reference: firestore.DocumentReference,
        attempt: Callable[[firestore.DocumentSnapshot], tuple[Any, _Change | None]],
    ) -> Any:
        """Read the document, let attempt() decide, commit its change if nobody wrote meanwhile.

        attempt() runs again on fresh state when another process won the race.
        """
        deadline = time.monotonic() + _CONTENTION_BUDGET_SECONDS
        for number in range(_ATTEMPTS):
            try:
                snapshot = reference.get(retry=_CALL_RETRY, timeout=_CALL_TIMEOUT_SECONDS)
                result, change = attempt(snapshot)
                if change is None:
                    return result
                batch = self._client.batch()
                self._stage(batch, reference, snapshot, change)
                batch.commit(retry=_CALL_RETRY, timeout=_CALL_TIMEOUT_SECONDS)
                return result
            except (FailedPrecondition, AlreadyExists):
                if time.monotonic() > deadline:
                    break
                time.sleep(random.uniform(0, 0.005 * 2 ** min(number, 6)))  # jittered backoff
            except TRANSIENT_ERRORS as error:
                raise unavailable("Firestore", error) from error
        logger.warning(
            "conversation update lost every race", extra={"wa_id": mask_phone(reference.id)}
        )
        raise UnavailableError("the conversation is busy; try again")

    def _stage(
        self,
        batch: firestore.WriteBatch,
        reference: firestore.DocumentReference,
        snapshot: firestore.DocumentSnapshot,
        change: _Change,
    ) -> None:
        """Stage the change on the condition that the document is still as it was read."""
        if not snapshot.exists:
            batch.create(reference, change.fields)  # fails if another process created it
        else:
            fields = dict(change.fields)
            if change.replace:
                for name in (snapshot.to_dict() or {}).keys() - fields.keys():
                    fields[name] = firestore.DELETE_FIELD
            unchanged = self._client.write_option(last_update_time=snapshot.update_time)
            batch.update(reference, fields, option=unchanged)
        for write in change.also_write:
            write(batch)

    def _document(
        self,
        stored: StoredConversation,
        update: ConversationUpdate,
        message_id: str | None,
        now: datetime,
    ) -> dict[str, Any]:
        fields = dict(stored.fields)
        fields.update(update.fields)
        fields.setdefault("created_at", now)
        fields["updated_at"] = now
        if message_id is not None:
            processed = list(fields.get("processed_ids", [])) + [message_id]
            fields["processed_ids"] = processed[-_PROCESSED_IDS_KEPT:]
        outbox = [] if update.drop_outbox else list(fields.get("outbox", []))
        for index, payload in enumerate(update.replies):
            key = f"{message_id}:{index}" if message_id else f"system:{now.timestamp()}:{index}"
            associated = f"{self._path(stored.wa_id)}#outbox:{key}"
            outbox.append(
                {
                    "key": key,
                    "sealed": self._seal(payload, associated),
                    "attempts": 0,
                    "claimed_until": None,
                    "queued_at": now,
                }
            )
        fields["outbox"] = outbox
        fields["outbox_pending"] = len(outbox)
        fields["sent"] = list(fields.get("sent", []))[-_SENT_KEPT:]
        if update.draft:
            fields["draft"] = self._seal(update.draft, self._path(stored.wa_id))
        else:
            fields.pop("draft", None)
        return fields

    def update_without_message(
        self, wa_id: str, now: datetime, decide: Callable[[StoredConversation], ConversationUpdate]
    ) -> ConversationUpdate:
        """Apply a change not caused by a patient message (an invitation, a support action)."""
        reference = self._collection.document(wa_id)

        def attempt(snapshot: firestore.DocumentSnapshot):
            stored = self._stored(wa_id, snapshot)
            update = decide(stored)
            return update, _Change(self._document(stored, update, None, now), replace=True)

        return self._read_modify_write(reference, attempt)

    # -- the outbox ----------------------------------------------------------------------
    def _opened(self, wa_id: str, items: list[dict[str, Any]]) -> list[OutboxItem]:
        path = self._path(wa_id)
        return [
            OutboxItem(
                item["key"],
                self._unseal(item["sealed"], f"{path}#outbox:{item['key']}"),
                item["attempts"],
                dict(item),
            )
            for item in items
        ]

    def claim_outbox(self, wa_id: str, now: datetime, lease: timedelta) -> list[OutboxItem]:
        """Lease the unsent replies so one process sends them while others skip them."""
        reference = self._collection.document(wa_id)

        def attempt(snapshot: firestore.DocumentSnapshot):
            outbox = (snapshot.to_dict() or {}).get("outbox", []) if snapshot.exists else []
            claimed = _claim(outbox, now, lease)
            change = _Change({"outbox": outbox, "outbox_pending": len(outbox)})
            return claimed, change if claimed else None

        return self._opened(wa_id, self._read_modify_write(reference, attempt))

    def settle_outbox(
        self, wa_id: str, now: datetime, items: list[OutboxItem], results: list[SendResult]
    ) -> None:
        """Record a round of sends: acknowledged (wamid) and dropped replies leave the outbox;
        the others are released for a later attempt."""
        if not results:
            return
        if all(result.wamid or result.drop for result in results):
            self._remove_settled(wa_id, items, results, now)
        else:
            self._settle_conditionally(wa_id, now, results)

    def _remove_settled(
        self, wa_id: str, items: list[OutboxItem], results: list[SendResult], now: datetime
    ) -> None:
        """One plain write instead of a transaction: remove the exact items we leased.

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
        try:
            self._collection.document(wa_id).update(changes)
        except TRANSIENT_ERRORS as error:
            raise unavailable("Firestore", error) from error

    def _settle_conditionally(self, wa_id: str, now: datetime, results: list[SendResult]) -> None:
        reference = self._collection.document(wa_id)
        by_key = {result.key: result for result in results}

        def attempt(snapshot: firestore.DocumentSnapshot):
            if not snapshot.exists:
                return None, None
            data = snapshot.to_dict() or {}
            outbox, sent = [], list(data.get("sent", []))
            for item in data.get("outbox", []):
                result = by_key.get(item["key"])
                if result is None:
                    outbox.append(item)
                elif result.wamid:
                    sent.append({"key": item["key"], "wamid": result.wamid})
                elif not result.drop:
                    outbox.append({**item, "claimed_until": None})
            changes: dict[str, Any] = {
                "outbox": outbox,
                "outbox_pending": len(outbox),
                "sent": sent[-_SENT_KEPT:],
            }
            errors = [result.error_code for result in results if result.error_code is not None]
            if errors:
                changes["last_error"] = {"code": errors[-1], "at": now, "source": "send"}
            return None, _Change(changes)

        self._read_modify_write(reference, attempt)

    def record_failed_status(self, wa_id: str, codes: tuple[int, ...], at: datetime) -> None:
        """A `failed` status update from Meta: visible to support staff on the conversation."""
        reference = self._collection.document(wa_id)
        try:
            reference.set(
                {
                    "failed_deliveries": firestore.Increment(1),
                    "last_error": {
                        "code": codes[0] if codes else None,
                        "at": at,
                        "source": "status",
                    },
                },
                merge=True,
            )
        except TRANSIENT_ERRORS as error:
            raise unavailable("Firestore", error) from error


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
        item["attempts"] = item.get("attempts", 0) + 1
        claimed.append(item)
    return claimed
