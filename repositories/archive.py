"""The encrypted intake archive: Tink-encrypted objects in GCS and a PHI-free Firestore index.

Objects: `intakes/YYYY/MM/DD/{record_id}.tink`, the record JSON under Tink AEAD with associated
data = the record id, written with `if_generation_match=0` so nothing is ever overwritten.
Index: `intakes/{record_id}` with submitted_at, object, key_id, schema_version, status.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import tink
from google.api_core import exceptions as google_exceptions
from google.cloud import firestore, storage
from requests.exceptions import RequestException

from repositories.clients import STORAGE_CALL, TRANSIENT_ERRORS, unavailable
from service.crypto import KeyMaterial, key_id_of
from service.errors import ConflictError, GoneError, NotFoundError, ServiceError
from service.record import (
    IntakeRecord,
    InvalidRecordError,
    from_json,
    is_record_id,
    to_json,
)

logger = logging.getLogger(__name__)

INDEX_COLLECTION = "intakes"
OBJECT_PREFIX = "intakes/"
ACTIVE, ERASED = "active", "erased"
# Larger pages mean fewer queries; each page costs more on the emulator as the index grows.
_PAGE_SIZE = 2000
_STORAGE_ERRORS = (*TRANSIENT_ERRORS, RequestException)


class RecordIntegrityError(ServiceError):
    """An archived record failed authentication or validation; never returned as data."""

    status = 500
    code = "record_integrity"

    def __init__(self, record_id: str, reason: str) -> None:
        self.record_id = record_id
        self.reason = reason
        super().__init__(f"record {record_id} failed its integrity check: {reason}")


class _Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def increment(self) -> int:
        with self._lock:
            self.value += 1
            return self.value


INTEGRITY_FAILURES = _Counter()


@dataclass(frozen=True)
class IndexEntry:
    record_id: str
    submitted_at: datetime
    object_name: str
    key_id: int | None
    schema_version: int
    status: str
    erased_at: datetime | None = None


def object_name_for(record_id: str, submitted_at: datetime) -> str:
    return f"{OBJECT_PREFIX}{submitted_at.astimezone(UTC):%Y/%m/%d}/{record_id}.tink"


def record_id_of_object(object_name: str) -> str | None:
    """Return the record id an archive object name holds, or None for anything else."""
    if not object_name.startswith(OBJECT_PREFIX) or not object_name.endswith(".tink"):
        return None
    record_id = object_name.rsplit("/", 1)[-1].removesuffix(".tink")
    return record_id if is_record_id(record_id) else None


class ArchiveRepository:
    """Archive, read, stream, re-encrypt and erase encrypted intake records."""

    def __init__(
        self,
        client: firestore.Client,
        bucket: storage.Bucket,
        keys: KeyMaterial,
        fetch_workers: int = 16,
    ) -> None:
        self._index = client.collection(INDEX_COLLECTION)
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

        The caller writes the entry, e.g. in the same transaction as the conversation that
        completed, so a record only counts once its conversation commits.
        """
        return self._store(record)[0]

    def _store(self, record: IntakeRecord) -> tuple[IndexEntry, IndexEntry | None]:
        """Write the object unless archived already; return its entry and the existing one."""
        plaintext = to_json(record)  # validates on the way in
        object_name = object_name_for(record.record_id, record.submitted_at)
        existing = self.index_entry(record.record_id)
        if existing is not None and existing.status == ERASED:
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
            status=ACTIVE,
        )
        return entry, existing

    def write_index_entry(self, transaction: firestore.Transaction, entry: IndexEntry) -> None:
        """Write an index entry as part of the caller's transaction."""
        transaction.set(self._index.document(entry.record_id), _entry_fields(entry))

    def discard_unindexed(self, entry: IndexEntry) -> bool:
        """Delete an object whose index entry was never committed (its transaction lost)."""
        if self.index_entry(entry.record_id) is not None:
            return False
        try:
            self._bucket.blob(entry.object_name).delete(**STORAGE_CALL)
        except google_exceptions.NotFound:
            pass
        except _STORAGE_ERRORS as error:
            raise unavailable("Cloud Storage", error) from error
        logger.warning("unindexed archive object discarded", extra={"record_id": entry.record_id})
        return True

    def _write_object(
        self, record_id: str, object_name: str, ciphertext: bytes, plaintext: bytes
    ) -> int | None:
        """Write the object unless it exists; return the key id of what is stored."""
        blob = self._bucket.blob(object_name)
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
        except _STORAGE_ERRORS as error:
            raise unavailable("Cloud Storage", error) from error
        stored = self._download(record_id, object_name)
        if self._decrypt_bytes(record_id, stored) != plaintext:
            raise ConflictError(f"record {record_id} is already archived with other content")
        return key_id_of(stored)

    def _create_index_entry(self, entry: IndexEntry) -> None:
        try:
            self._index.document(entry.record_id).create(_entry_fields(entry))
        except google_exceptions.AlreadyExists:
            current = self.index_entry(entry.record_id)
            if current is None or current.object_name != entry.object_name:
                raise ConflictError(f"record {entry.record_id} has another index entry") from None
        except TRANSIENT_ERRORS as error:
            raise unavailable("Firestore", error) from error

    # -- reading -------------------------------------------------------------------------
    def index_entry(self, record_id: str) -> IndexEntry | None:
        if not is_record_id(record_id):
            return None
        try:
            snapshot = self._index.document(record_id).get()
        except TRANSIENT_ERRORS as error:
            raise unavailable("Firestore", error) from error
        return _entry(snapshot.id, snapshot.to_dict()) if snapshot.exists else None

    def read(self, record_id: str) -> IntakeRecord:
        """Return the decrypted, validated record; raise NotFound, Gone or RecordIntegrity."""
        entry = self.index_entry(record_id)
        if entry is None:
            raise NotFoundError(f"record {record_id} not found")
        if entry.status == ERASED:
            raise GoneError(f"record {record_id} was erased")
        record = self._fetch(entry)
        if record is None:
            raise GoneError(f"record {record_id} was erased")
        return record

    def _fetch(self, entry: IndexEntry) -> IntakeRecord | None:
        """Fetch and decrypt; None when the record was erased after its entry was read."""
        try:
            ciphertext = self._bucket.blob(entry.object_name).download_as_bytes(**STORAGE_CALL)
        except google_exceptions.NotFound:
            current = self.index_entry(entry.record_id)
            if current is not None and current.status == ERASED:
                return None
            raise _integrity_failure(entry.record_id, "its archived object is missing") from None
        except _STORAGE_ERRORS as error:
            raise unavailable("Cloud Storage", error) from error
        return self._decode(entry.record_id, ciphertext)

    def _download(self, record_id: str, object_name: str) -> bytes:
        try:
            return self._bucket.blob(object_name).download_as_bytes(**STORAGE_CALL)
        except google_exceptions.NotFound:
            raise _integrity_failure(record_id, "its archived object is missing") from None
        except _STORAGE_ERRORS as error:
            raise unavailable("Cloud Storage", error) from error

    def _decrypt_bytes(self, record_id: str, ciphertext: bytes) -> bytes:
        key_id = key_id_of(ciphertext)
        keyring = self.keys.keyring_for(key_id)
        if key_id is None or key_id not in keyring.key_ids:
            raise _integrity_failure(record_id, f"it is encrypted under an unknown key ({key_id})")
        try:
            return keyring.decrypt(ciphertext, record_id.encode())
        except tink.TinkError:
            raise _integrity_failure(
                record_id, "authentication failed (tampered, or another record's ciphertext)"
            ) from None

    def _decode(self, record_id: str, ciphertext: bytes) -> IntakeRecord:
        plaintext = self._decrypt_bytes(record_id, ciphertext)
        try:
            record = from_json(plaintext)  # validates on the way out
        except InvalidRecordError as error:
            raise _integrity_failure(record_id, f"its content is invalid ({error})") from None
        if record.record_id != record_id:
            raise _integrity_failure(record_id, "it holds another record id")
        return record

    def index_entries(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[IndexEntry]:
        """Yield index entries with start <= submitted_at < end, oldest first.

        Pages are read one ahead in a background thread, so reading the index overlaps with
        whatever the caller does with the entries (fetching and decrypting, for exports).
        """
        pages: queue.Queue[list[IndexEntry] | BaseException | None] = queue.Queue(maxsize=2)
        stop = threading.Event()

        def produce() -> None:
            try:
                for page in self._index_pages(start, end):
                    while not stop.is_set():
                        try:
                            pages.put(page, timeout=0.5)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                pages.put(None)
            except BaseException as error:  # handed to the consumer, raised there
                pages.put(error)

        reader = threading.Thread(target=produce, name="index-reader", daemon=True)
        reader.start()
        try:
            while (page := pages.get()) is not None:
                if isinstance(page, BaseException):
                    raise page
                yield from page
        finally:
            stop.set()

    def _index_pages(
        self, start: datetime | None, end: datetime | None
    ) -> Iterator[list[IndexEntry]]:
        query = self._index.order_by("submitted_at").order_by("__name__")
        if start is not None:
            query = query.where(filter=firestore.FieldFilter("submitted_at", ">=", start))
        if end is not None:
            query = query.where(filter=firestore.FieldFilter("submitted_at", "<", end))
        last = None
        while True:
            page = query.limit(_PAGE_SIZE)
            if last is not None:
                page = page.start_after(last)
            try:
                snapshots = list(page.stream())
            except TRANSIENT_ERRORS as error:
                raise unavailable("Firestore", error) from error
            yield [_entry(snapshot.id, snapshot.to_dict()) for snapshot in snapshots]
            if len(snapshots) < _PAGE_SIZE:
                return
            last = snapshots[-1]

    def iter_records(
        self, start: datetime | None = None, end: datetime | None = None, window: int = 64
    ) -> Iterator[IntakeRecord]:
        """Yield active records in submitted_at order, fetched and decrypted in parallel.

        At most `window` records are in flight or waiting, whatever the archive's size.
        A record that fails its integrity check raises RecordIntegrityError: nothing is skipped.
        A record erased while this runs is left out, as if the export had started just after.
        """
        entries = (entry for entry in self.index_entries(start, end) if entry.status == ACTIVE)
        pending: deque[Future[IntakeRecord | None]] = deque()
        with ThreadPoolExecutor(self._fetch_workers, thread_name_prefix="archive-fetch") as pool:
            try:
                for entry in entries:
                    pending.append(pool.submit(self._fetch, entry))
                    if len(pending) >= window:
                        if (record := pending.popleft().result()) is not None:
                            yield record
                while pending:
                    if (record := pending.popleft().result()) is not None:
                        yield record
            finally:
                for future in pending:
                    future.cancel()

    # -- maintenance ---------------------------------------------------------------------
    def erase(self, record_id: str, erased_at: datetime) -> IndexEntry:
        """Delete the record's object and mark its index entry erased (no PHI is kept)."""
        entry = self.index_entry(record_id)
        if entry is None:
            raise NotFoundError(f"record {record_id} not found")
        try:
            self._bucket.blob(entry.object_name).delete(**STORAGE_CALL)
        except google_exceptions.NotFound:
            pass  # an earlier, interrupted erase already deleted it
        except _STORAGE_ERRORS as error:
            raise unavailable("Cloud Storage", error) from error
        fields = {"status": ERASED, "erased_at": erased_at, "key_id": None}
        self._index.document(record_id).update(fields)
        return IndexEntry(**{**entry.__dict__, "status": ERASED, "erased_at": erased_at,
                             "key_id": None})  # fmt: skip

    def reencrypt(self, entry: IndexEntry) -> bool:
        """Re-encrypt one record under the primary key; False when it already uses it."""
        keyring = self.keys.keyring()
        blob = self._bucket.blob(entry.object_name)
        try:
            ciphertext = blob.download_as_bytes(**STORAGE_CALL)
        except google_exceptions.NotFound:
            raise _integrity_failure(entry.record_id, "its archived object is missing") from None
        if key_id_of(ciphertext) == keyring.primary_key_id:
            self._set_key_id(entry.record_id, keyring.primary_key_id)
            return False
        record = self._decode(entry.record_id, ciphertext)
        fresh = keyring.encrypt(to_json(record), entry.record_id.encode())
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
        except _STORAGE_ERRORS as error:
            raise unavailable("Cloud Storage", error) from error
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
            status=ACTIVE,
        )
        self._create_index_entry(entry)
        return entry


def _integrity_failure(record_id: str, reason: str) -> RecordIntegrityError:
    total = INTEGRITY_FAILURES.increment()
    logger.error(
        "archived record failed its integrity check",
        extra={"record_id": record_id, "reason": reason, "integrity_failures_total": total},
    )
    return RecordIntegrityError(record_id, reason)


def _entry_fields(entry: IndexEntry) -> dict[str, object]:
    return {
        "submitted_at": entry.submitted_at,
        "object": entry.object_name,
        "key_id": entry.key_id,
        "schema_version": entry.schema_version,
        "status": entry.status,
        "erased_at": entry.erased_at,
    }


def _entry(record_id: str, data: dict) -> IndexEntry:
    return IndexEntry(
        record_id=record_id,
        submitted_at=data["submitted_at"],
        object_name=data["object"],
        key_id=data.get("key_id"),
        schema_version=data.get("schema_version", 1),
        status=data.get("status", ACTIVE),
        erased_at=data.get("erased_at"),
    )
