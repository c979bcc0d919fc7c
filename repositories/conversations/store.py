"""Reading and conditionally writing conversation documents: sealing, where a patient's
conversation is, and the read-decide-commit every change goes through."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import tink
from google.api_core.exceptions import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
)
from google.cloud import firestore

from repositories.clients import translated
from repositories.conversations.model import (
    ATTEMPTS,
    CALL,
    COLLECTION,
    CONTENTION_BUDGET_SECONDS,
    MAX_OUTBOX,
    PROCESSED_IDS_KEPT,
    SENT_KEPT,
    Change,
    Claim,
    ConversationIntegrityError,
    ConversationUpdate,
    DropReason,
    IndexStager,
    Leased,
    OutboxItem,
    StoredConversation,
    count_drops,
    identity_of,
    stamp_progress,
)
from repositories.identities import IdentityResolver, Located, is_legacy_key
from service.domain.identity import PatientIdentity, Pseudonyms
from service.errors import UnavailableError
from service.keys.crypto import KeyMaterial, key_id_of

logger = logging.getLogger(__name__)
_Result = TypeVar("_Result")


class ConversationStore:
    """Sealed conversation documents, found by pseudonym, changed by conditional commits."""

    def __init__(
        self,
        client: firestore.Client,
        keys: KeyMaterial,
        pseudonyms: Pseudonyms,
        index: IndexStager,
    ) -> None:
        self._client = client
        self._index = index
        self._collection = client.collection(COLLECTION)
        self._keys = keys
        self._identities = IdentityResolver(client, pseudonyms, self._sealed_identity, CALL)

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
        found = self.document(who)
        return found[0] if found else None

    def get(self, who: PatientIdentity | str) -> StoredConversation:
        located = self._located(who)
        if located is None:
            return StoredConversation("", False, {}, {})
        return self._stored(located)

    def raw(self, who: PatientIdentity | str) -> dict[str, Any] | None:
        """The document exactly as stored (what the Firestore console shows)."""
        found = self.document(who)
        return found[1] if found else None

    def document(self, who: PatientIdentity | str) -> tuple[str, dict[str, Any]] | None:
        """Return a patient's conversation key and its document as stored, in one lookup."""
        located = self._located(who)
        if located is None or not located.current.exists:
            return None
        return located.key, located.current.to_dict() or {}

    def identity_in(self, snapshot: firestore.DocumentSnapshot) -> PatientIdentity | None:
        """Who a conversation document read elsewhere belongs to (the portal masks it)."""
        return self._sealed_identity(snapshot)

    def _located(self, who: PatientIdentity | str) -> Located | None:
        identity = identity_of(who)
        with translated("Firestore"):
            if identity is not None:
                return self._identities.locate(identity)
            assert isinstance(who, str)
            snapshot = self._collection.document(who).get(**CALL)
        return Located(who, snapshot) if snapshot.exists else None

    def with_pending_outbox(self, limit: int = 500) -> list[str]:
        query = self._collection.where(filter=firestore.FieldFilter("outbox_pending", ">", 0))
        return [snapshot.id for snapshot in query.limit(limit).stream()]

    def due_for_reminder(self, now: datetime, page_size: int = 200) -> Iterator[str]:
        """Yield the keys of conversations whose next reminder is due at `now`, earliest
        first, a page at a time through the `next_reminder_at` index (never a scan)."""
        query = (
            self._collection.where(filter=firestore.FieldFilter("next_reminder_at", "<=", now))
            .order_by("next_reminder_at")
            .select(["next_reminder_at"])
        )
        last: firestore.DocumentSnapshot | None = None
        while True:
            page = query.start_after(last) if last is not None else query
            with translated("Firestore"):
                snapshots = list(page.limit(page_size).stream(**CALL))
            yield from (snapshot.id for snapshot in snapshots)
            if len(snapshots) < page_size:
                return
            last = snapshots[-1]

    def count_where(self, field: str, operator: str, value: Any) -> int:
        """Count conversations matching one filter with an aggregation query (no documents
        are read)."""
        query = self._collection.where(filter=firestore.FieldFilter(field, operator, value))
        aggregation: Any = query.count(alias="matching")  # its stub misreads get()
        with translated("Firestore"):
            # A list of result lists at run time (one per query), typed as a flat list.
            results: Any = aggregation.get(retry=CALL["retry"], timeout=CALL["timeout"])
        return int(results[0][0].value)

    def keys(self) -> list[str]:
        """Every conversation's document id (for migrations and scans)."""
        return [reference.id for reference in self._collection.list_documents()]

    def _locate(self, lookup: PatientIdentity, target: PatientIdentity) -> Located:
        located = self._identities.locate(lookup, target)
        assert located is not None  # with a target, locate() always names a place
        return located

    def _claim_of(self, stored: StoredConversation, leased: Leased) -> Claim:
        return self._claim(stored.key, stored.identity, leased, stored.fields)

    def _claim(
        self,
        key: str,
        identity: PatientIdentity | None,
        leased: Leased,
        fields: dict[str, Any],
    ) -> Claim:
        return Claim(
            key,
            identity,
            self._opened(key, leased.items),
            fields.get("last_inbound_at"),
            leased.leased_until,
            leased.waiting,
            leased.blocked_until,
            leased.skipped,
        )

    def _read_modify_write(
        self,
        locate: Callable[[], Located],
        attempt: Callable[[Located], tuple[_Result, Change | None]],
    ) -> _Result:
        """Read the documents, let attempt() decide, commit its change if nobody wrote
        meanwhile; attempt() runs again on fresh state when another process won the race."""
        deadline = time.monotonic() + CONTENTION_BUDGET_SECONDS
        key = None
        for number in range(ATTEMPTS):
            with translated("Firestore"):
                try:
                    located = locate()
                    key = located.key
                    result, change = attempt(located)
                    if change is None:
                        return result
                    batch = self._client.batch()
                    self._stage(batch, located, change)
                    batch.commit(**CALL)
                    return result
                except (FailedPrecondition, AlreadyExists, NotFound):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(random.uniform(0, 0.005 * 2 ** min(number, 6)))  # jittered backoff
        logger.warning(
            "conversation update lost every race", extra={"conversation": (key or "")[:12]}
        )
        raise UnavailableError("the conversation is busy; try again")

    def _stage(self, batch: firestore.WriteBatch, located: Located, change: Change) -> None:
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
        for entry in change.archived:
            self._index.write_index_entry(batch, entry)

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
        stamp_progress(stored.fields, fields, now)
        fields.setdefault("created_at", now)
        fields["updated_at"] = now
        if message_id is not None:
            processed = list(fields.get("processed_ids", [])) + [message_id]
            fields["processed_ids"] = processed[-PROCESSED_IDS_KEPT:]
        outbox = [] if update.drop_outbox else list(fields.get("outbox", []))
        overflow = len(outbox) + len(update.replies) - MAX_OUTBOX
        if overflow > 0:
            outbox = outbox[overflow:]
            count_drops(fields, overflow, DropReason.OUTBOX_FULL, now)
            logger.warning(
                "replies dropped",
                extra={
                    "conversation": stored.key[:12],
                    "reason": DropReason.OUTBOX_FULL,
                    "count": overflow,
                },
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
        fields["sent"] = list(fields.get("sent", []))[-SENT_KEPT:]
        if stored.identity is not None:
            fields["identity"] = self._seal(stored.identity.to_dict(), f"{path}#identity")
        if update.draft:
            fields["draft"] = self._seal(update.draft, path)
        else:
            fields.pop("draft", None)
        return fields

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
