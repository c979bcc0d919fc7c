"""Archived objects and their index entries: write once, read and decrypt, re-encrypt,
discard, restore. The other parts of the archive build on this one."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import tink
from google.api_core import exceptions as google_exceptions
from google.cloud import firestore, storage

from repositories.archive.model import (
    INDEX_COLLECTION,
    OBJECT_PREFIX,
    IndexEntry,
    IndexStatus,
    day_of,
    entry_fields,
    entry_from,
    integrity_failure,
    object_name_for,
    record_id_of_object,
)
from repositories.batches import (
    DAY_COLLECTION,
    day_id,
)
from repositories.clients import (
    STORAGE_CALL,
    STORAGE_ERRORS,
    translated,
)
from service.domain.record import (
    IntakeRecord,
    InvalidRecordError,
    from_json,
    is_record_id,
    to_json,
)
from service.errors import ConflictError, GoneError, NotFoundError
from service.keys.crypto import KeyMaterial, key_id_of

logger = logging.getLogger(__name__)


class ArchiveObjects:
    """Write, read, re-encrypt and restore encrypted intake records and their index."""

    def __init__(
        self,
        client: firestore.Client,
        bucket: storage.Bucket,
        keys: KeyMaterial,
        fetch_workers: int = 16,
    ) -> None:
        self._client = client
        self._index = client.collection(INDEX_COLLECTION)
        self._days = client.collection(DAY_COLLECTION)
        self._bucket = bucket
        self.keys = keys
        self._fetch_workers = fetch_workers

    # -- writing -------------------------------------------------------------------------
    def archive(self, record: IntakeRecord) -> IndexEntry:
        """Store a record once; archiving it again (a retry) repairs and changes nothing."""
        entry, existing = self._store(record)
        if existing is None or existing.object_name != entry.object_name:
            self._create_index_entry(entry)  # refuses an entry naming another object
        return entry

    def store_object(self, record: IntakeRecord) -> IndexEntry:
        """Write the record's object (once) and return the index entry that would name it.

        The caller writes the entry, e.g. in the same conditional commit as the conversation that
        completed, so a record only counts once its conversation commits.
        """
        return self._store(record)[0]

    def _store(self, record: IntakeRecord) -> tuple[IndexEntry, IndexEntry | None]:
        """Write the object unless archived already; return its entry and the existing one."""
        plaintext = to_json(record)  # validates on the way in
        object_name = object_name_for(record.record_id, record.submitted_at)
        existing = self.index_entry(record.record_id)
        if existing is not None and existing.status == IndexStatus.ERASED:
            raise ConflictError(f"record {record.record_id} was erased")
        if existing is not None and existing.object_name == object_name:
            return existing, existing  # a retry after a complete archive: nothing to repair
        keyring = self.keys.keyring()
        ciphertext = keyring.encrypt(plaintext, record.record_id.encode())
        key_id = self._write_object(record.record_id, object_name, ciphertext, plaintext)
        entry = IndexEntry(
            record_id=record.record_id,
            submitted_at=record.submitted_at,
            object_name=object_name,
            key_id=key_id if key_id is not None else keyring.primary_key_id,
            schema_version=record.schema_version,
            status=IndexStatus.ACTIVE,
        )
        return entry, existing

    def write_index_entry(self, batch: firestore.WriteBatch, entry: IndexEntry) -> None:
        """Stage an index entry, and its day's version bump, on the caller's write batch."""
        batch.set(self._index.document(entry.record_id), entry_fields(entry))
        batch.set(*self._day_bump(entry.submitted_at), merge=True)

    def _day_bump(
        self, submitted_at: datetime, **more: object
    ) -> tuple[firestore.DocumentReference, dict[str, object]]:
        """The write that marks a change to a day's index, so its sealed batch is not read."""
        day = day_of(submitted_at)
        fields: dict[str, object] = {"day": day_id(day), "version": firestore.Increment(1), **more}
        return self._days.document(day_id(day)), fields

    def discard_unindexed(self, entry: IndexEntry) -> bool:
        """Delete an object whose index entry was never committed (its conditional commit lost)."""
        if self.index_entry(entry.record_id) is not None:
            return False
        self._delete_quietly(entry.object_name)
        logger.warning("unindexed archive object discarded", extra={"record_id": entry.record_id})
        return True

    def _write_object(
        self, record_id: str, object_name: str, ciphertext: bytes, plaintext: bytes
    ) -> int | None:
        """Write the object unless it exists; return the key id of what is stored."""
        blob = self._bucket.blob(object_name)
        with translated("Cloud Storage", STORAGE_ERRORS):
            try:
                blob.upload_from_string(
                    ciphertext,
                    content_type="application/octet-stream",
                    if_generation_match=0,
                    **STORAGE_CALL,
                )
                return key_id_of(ciphertext)
            except google_exceptions.PreconditionFailed:
                pass  # written by an earlier attempt: check that it is this very record
        stored = self._download(record_id, object_name)
        if self._decrypt_bytes(record_id, stored) != plaintext:
            raise ConflictError(f"record {record_id} is already archived with other content")
        return key_id_of(stored)

    def _create_index_entry(self, entry: IndexEntry) -> None:
        batch = self._client.batch()
        batch.create(self._index.document(entry.record_id), entry_fields(entry))
        batch.set(*self._day_bump(entry.submitted_at), merge=True)
        with translated("Firestore"):
            try:
                batch.commit()
            except google_exceptions.AlreadyExists:
                current = self.index_entry(entry.record_id)
                if current is None or current.object_name != entry.object_name:
                    raise ConflictError(
                        f"record {entry.record_id} has another index entry"
                    ) from None

    # -- reading -------------------------------------------------------------------------
    def index_entry(self, record_id: str) -> IndexEntry | None:
        if not is_record_id(record_id):
            return None
        with translated("Firestore"):
            snapshot = self._index.document(record_id).get()
        return entry_from(snapshot.id, snapshot.to_dict() or {}) if snapshot.exists else None

    def read(self, record_id: str) -> IntakeRecord:
        """Return the decrypted, validated record; raise NotFound, Gone or RecordIntegrity."""
        entry = self.index_entry(record_id)
        if entry is None:
            raise NotFoundError(f"record {record_id} not found")
        if entry.status == IndexStatus.ERASED:
            raise GoneError(f"record {record_id} was erased")
        record = self._fetch(entry)
        if record is None:
            raise GoneError(f"record {record_id} was erased")
        return record

    def _fetch(self, entry: IndexEntry) -> IntakeRecord | None:
        """Fetch and decrypt; None when the record was erased after its entry was read."""
        ciphertext = self._fetch_ciphertext(entry)
        return None if ciphertext is None else self._decode(entry.record_id, ciphertext)

    def _fetch_ciphertext(self, entry: IndexEntry) -> bytes | None:
        """Fetch the stored ciphertext; None when the record was erased after its entry was read."""
        with translated("Cloud Storage", STORAGE_ERRORS):
            try:
                return self._bucket.blob(entry.object_name).download_as_bytes(**STORAGE_CALL)
            except google_exceptions.NotFound:
                current = self.index_entry(entry.record_id)
                if current is not None and current.status == IndexStatus.ERASED:
                    return None
                raise integrity_failure(entry.record_id, "its archived object is missing") from None

    def _download(self, record_id: str, object_name: str) -> bytes:
        with translated("Cloud Storage", STORAGE_ERRORS):
            try:
                return self._bucket.blob(object_name).download_as_bytes(**STORAGE_CALL)
            except google_exceptions.NotFound:
                raise integrity_failure(record_id, "its archived object is missing") from None

    def _decrypt_bytes(self, record_id: str, ciphertext: bytes) -> bytes:
        key_id = key_id_of(ciphertext)
        keyring = self.keys.keyring_for(key_id)
        if key_id is None or key_id not in keyring.key_ids:
            raise integrity_failure(record_id, f"it is encrypted under an unknown key ({key_id})")
        try:
            return keyring.decrypt(ciphertext, record_id.encode())
        except tink.TinkError:
            raise integrity_failure(
                record_id, "authentication failed (tampered, or another record's ciphertext)"
            ) from None

    def _decode(self, record_id: str, ciphertext: bytes) -> IntakeRecord:
        plaintext = self._decrypt_bytes(record_id, ciphertext)
        try:
            record = from_json(plaintext)  # validates on the way out
        except InvalidRecordError as error:
            raise integrity_failure(record_id, f"its content is invalid ({error})") from None
        if record.record_id != record_id:
            raise integrity_failure(record_id, "it holds another record id")
        return record

    def _delete_quietly(self, name: str) -> None:
        """Delete an object; one already gone is not an error (a retry, a race)."""
        with translated("Cloud Storage", STORAGE_ERRORS):
            try:
                self._bucket.blob(name).delete(**STORAGE_CALL)
            except google_exceptions.NotFound:
                pass

    def _get(self, reference: firestore.DocumentReference) -> dict[str, Any] | None:
        with translated("Firestore"):
            snapshot = reference.get()
        return snapshot.to_dict() if snapshot.exists else None

    def reencrypt(self, entry: IndexEntry) -> bool:
        """Re-encrypt one record under the primary key; False when it already uses it."""
        keyring = self.keys.keyring()
        blob = self._bucket.blob(entry.object_name)
        try:
            ciphertext = blob.download_as_bytes(**STORAGE_CALL)
        except google_exceptions.NotFound:
            raise integrity_failure(entry.record_id, "its archived object is missing") from None
        if key_id_of(ciphertext) == keyring.primary_key_id:
            self._set_key_id(entry.record_id, keyring.primary_key_id)
            return False
        record = self._decode(entry.record_id, ciphertext)
        fresh = keyring.encrypt(to_json(record), entry.record_id.encode())
        with translated("Cloud Storage", STORAGE_ERRORS):
            try:
                # Only over the generation we read: a concurrent erase or re-encrypt wins.
                blob.upload_from_string(
                    fresh,
                    content_type="application/octet-stream",
                    if_generation_match=blob.generation,
                    **STORAGE_CALL,
                )
            except google_exceptions.PreconditionFailed:
                return False
        self._set_key_id(entry.record_id, keyring.primary_key_id)
        return True

    def _set_key_id(self, record_id: str, key_id: int) -> None:
        self._index.document(record_id).update({"key_id": key_id})

    def object_names(self) -> Iterator[str]:
        """Yield the name of every archive object in the bucket."""
        for blob in self._bucket.list_blobs(prefix=OBJECT_PREFIX):
            yield blob.name

    def restore_index_entry(
        self, object_name: str, owned: Callable[[IntakeRecord], bool] = lambda record: True
    ) -> IndexEntry | None:
        """Recreate a missing index entry from its object; None when the entry exists or the
        record is not `owned` (an object whose conversation never committed)."""
        record_id = record_id_of_object(object_name)
        if record_id is None or self.index_entry(record_id) is not None:
            return None
        ciphertext = self._download(record_id, object_name)
        record = self._decode(record_id, ciphertext)
        if not owned(record):
            logger.warning("unowned archive object left unindexed", extra={"record_id": record_id})
            return None
        entry = IndexEntry(
            record_id=record_id,
            submitted_at=record.submitted_at,
            object_name=object_name,
            key_id=key_id_of(ciphertext),
            schema_version=record.schema_version,
            status=IndexStatus.ACTIVE,
        )
        self._create_index_entry(entry)
        return entry
