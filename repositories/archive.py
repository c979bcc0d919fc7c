"""The encrypted intake archive: Tink-encrypted objects in GCS and a PHI-free Firestore index.

Objects: `intakes/YYYY/MM/DD/{record_id}.tink`, the record JSON under Tink AEAD with associated
data = the record id, written with `if_generation_match=0` so nothing is ever overwritten.
Index: `intakes/{record_id}` with submitted_at, object, key_id, schema_version, status.
Days: `intake_days/{YYYY-MM-DD}` with a `version` bumped in the same write as every index change
of that day, and the day's sealed batch (repositories/batches.py) once `records seal` ran.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

import tink
from google.api_core import exceptions as google_exceptions
from google.cloud import firestore, storage
from requests.exceptions import RequestException

from repositories.batches import (
    DAY_COLLECTION,
    BatchFormatError,
    FrameReader,
    FrameWriter,
    SealedBatch,
    batch_prefix,
    day_id,
)
from repositories.clients import STORAGE_CALL, TRANSIENT_ERRORS, unavailable
from service.domain.record import (
    IntakeRecord,
    InvalidRecordError,
    from_json,
    is_record_id,
    to_json,
)
from service.errors import ConflictError, GoneError, NotFoundError, ServiceError
from service.keys.crypto import KeyMaterial, key_id_of

logger = logging.getLogger(__name__)

INDEX_COLLECTION = "intakes"
OBJECT_PREFIX = "intakes/"
ACTIVE, ERASED = "active", "erased"
# Larger pages mean fewer queries; each page costs more on the emulator as the index grows.
_PAGE_SIZE = 2000
_STORAGE_ERRORS = (*TRANSIENT_ERRORS, RequestException)
# Batches are read in ranged GETs of this size: few requests, bounded memory.
BATCH_READ_CHUNK = 8 * 1024 * 1024
_BATCH_WRITE_CHUNK = 8 * 1024 * 1024  # a multiple of 256 KiB, as resumable uploads require
# A batch object no day document names is deleted once it is this old (a crashed seal's);
# younger ones may belong to a seal still running.
STRAY_BATCH_AGE = timedelta(minutes=15)
_T = TypeVar("_T")


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

    @property
    def order_key(self) -> tuple[datetime, str]:
        return self.submitted_at, self.record_id


@dataclass
class ReadStats:
    """How iter_records got its records: from sealed daily batches or one GET each."""

    from_batches: int = 0
    one_by_one: int = 0
    batches_used: int = 0
    batch_fallbacks: int = 0


@dataclass(frozen=True)
class _IndexRange:
    start: datetime | None
    end: datetime | None


@dataclass
class SealReport:
    day: date
    records: int = 0
    sealed: bool = False
    already_sealed: bool = False
    superseded: int = 0
    notes: list[str] = field(default_factory=list)


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


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
        """Write an index entry, and bump its day's version, as part of the caller's transaction."""
        transaction.set(self._index.document(entry.record_id), _entry_fields(entry))
        transaction.set(*self._day_bump(entry.submitted_at), merge=True)

    def _day_bump(self, submitted_at: datetime, **more: object) -> tuple[object, dict]:
        """The write that marks a change to a day's index, so its sealed batch is not read."""
        day = day_of(submitted_at)
        fields = {"day": day_id(day), "version": firestore.Increment(1), **more}
        return self._days.document(day_id(day)), fields

    def discard_unindexed(self, entry: IndexEntry) -> bool:
        """Delete an object whose index entry was never committed (its transaction lost)."""
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
        batch = self._client.batch()
        batch.create(self._index.document(entry.record_id), _entry_fields(entry))
        batch.set(*self._day_bump(entry.submitted_at), merge=True)
        try:
            batch.commit()
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
        ciphertext = self._fetch_ciphertext(entry)
        return None if ciphertext is None else self._decode(entry.record_id, ciphertext)

    def _fetch_ciphertext(self, entry: IndexEntry) -> bytes | None:
        """Fetch the stored ciphertext; None when the record was erased after its entry was read."""
        try:
            return self._bucket.blob(entry.object_name).download_as_bytes(**STORAGE_CALL)
        except google_exceptions.NotFound:
            current = self.index_entry(entry.record_id)
            if current is not None and current.status == ERASED:
                return None
            raise _integrity_failure(entry.record_id, "its archived object is missing") from None
        except _STORAGE_ERRORS as error:
            raise unavailable("Cloud Storage", error) from error

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
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        window: int = 64,
        stats: ReadStats | None = None,
    ) -> Iterator[IntakeRecord]:
        """Yield active records in submitted_at order, fetched and decrypted in parallel.

        Whole days with a current sealed batch are read from it in a few large requests; the
        rest (today, unsealed or changed days) one GET per record, `window` in flight.
        A record that fails its integrity check raises RecordIntegrityError: nothing is skipped.
        A record erased while this runs is left out, as if the export had started just after,
        unless it was already read from its day's batch (then as if the erase came just after).
        """
        stats = stats if stats is not None else ReadStats()
        for segment in self._read_plan(start, end):
            if isinstance(segment, SealedBatch):
                yield from self._batch_records(segment, window, stats)
            else:
                entries = self.index_entries(segment.start, segment.end)
                yield from self._fetched_records(entries, window, stats)

    def _read_plan(
        self, start: datetime | None, end: datetime | None
    ) -> list[SealedBatch | _IndexRange]:
        """Split [start, end) into the whole days read from batches and the ranges between."""
        plan: list[SealedBatch | _IndexRange] = []
        cursor = start
        for batch in self.current_batches(start, end):
            batch_start = day_start(batch.day)
            if cursor is None or cursor < batch_start:
                plan.append(_IndexRange(cursor, batch_start))
            plan.append(batch)
            cursor = batch_start + timedelta(days=1)
        if cursor is None or end is None or cursor < end:
            plan.append(_IndexRange(cursor, end))
        return plan

    def current_batches(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> list[SealedBatch]:
        """Sealed batches of whole days inside [start, end) whose day has not changed since."""
        query = self._days.order_by("day")
        if start is not None:
            query = query.where(filter=firestore.FieldFilter("day", ">=", day_id(day_of(start))))
        if end is not None:
            query = query.where(filter=firestore.FieldFilter("day", "<=", day_id(day_of(end))))
        try:
            snapshots = list(query.stream())
        except TRANSIENT_ERRORS as error:
            raise unavailable("Firestore", error) from error
        batches = []
        for snapshot in snapshots:
            batch = _current_batch(snapshot.to_dict())
            if batch is None:
                continue
            first = day_start(batch.day)
            inside = (start is None or start <= first) and (
                end is None or first + timedelta(days=1) <= end
            )
            if inside:
                batches.append(batch)
        return batches

    def _fetched_records(
        self, entries: Iterable[IndexEntry], window: int, stats: ReadStats
    ) -> Iterator[IntakeRecord]:
        active = (entry for entry in entries if entry.status == ACTIVE)
        for record in _in_order(self._fetch, active, self._fetch_workers, window):
            if record is not None:
                stats.one_by_one += 1
                yield record

    def _batch_records(
        self, batch: SealedBatch, window: int, stats: ReadStats
    ) -> Iterator[IntakeRecord]:
        """Yield a day's records from its batch, checking every frame and the whole object.

        If the object disappears while read (the day was resealed, or a record erased), the
        rest of the day comes from the per-record objects, after the last record yielded.
        """
        last: tuple[datetime, str] | None = None
        label = f"batch {day_id(batch.day)}"
        blob = self._bucket.blob(batch.object_name, generation=batch.generation)
        try:
            with blob.open("rb", chunk_size=BATCH_READ_CHUNK, **STORAGE_CALL) as stream:
                reader = FrameReader(stream)
                for record_id, ciphertext in reader:
                    record = self._decode(record_id, ciphertext)
                    key = (record.submitted_at, record_id)
                    if day_of(record.submitted_at) != batch.day:
                        raise _integrity_failure(record_id, f"it is in the {label} of another day")
                    if last is not None and key <= last:
                        raise _integrity_failure(record_id, f"it is out of order in the {label}")
                    last = key
                    stats.from_batches += 1
                    yield record
            if reader.count != batch.count or reader.sha256 != batch.sha256:
                raise _integrity_failure(label, "it does not match its day's seal")
            stats.batches_used += 1
            return
        except google_exceptions.NotFound:
            logger.info("sealed batch gone while read; reading the rest of its day one by one",
                        extra={"day": day_id(batch.day)})  # fmt: skip
        except BatchFormatError as error:
            raise _integrity_failure(label, str(error)) from None
        except _STORAGE_ERRORS as error:
            raise unavailable("Cloud Storage", error) from error
        stats.batch_fallbacks += 1
        first = day_start(batch.day)
        rest = (
            entry
            for entry in self.index_entries(first, first + timedelta(days=1))
            if last is None or entry.order_key > last
        )
        yield from self._fetched_records(rest, window, stats)

    # -- sealing -------------------------------------------------------------------------
    def days_to_seal(self, before: date) -> list[date]:
        """Days before `before` with index changes and no current batch, oldest first."""
        query = self._days.where(filter=firestore.FieldFilter("day", "<", day_id(before)))
        try:
            snapshots = list(query.order_by("day").stream())
        except TRANSIENT_ERRORS as error:
            raise unavailable("Firestore", error) from error
        primary = self.keys.keyring().primary_key_id
        days = []
        for snapshot in snapshots:
            fields = snapshot.to_dict()
            batch = _current_batch(fields)
            if batch is None or set(batch.key_ids) - {primary}:
                days.append(date.fromisoformat(fields["day"]))
        return days

    def seal_day(
        self, day: date, window: int = 64, on_written: Callable[[], None] | None = None
    ) -> SealReport:
        """Copy the day's active records' ciphertexts into one batch object and record it.

        The batch is recorded only if the day's version did not change while it was written
        (an archive, erase or rebuild of that day meanwhile); otherwise its object is deleted
        and the day stays read one record at a time until the next seal.
        `on_written` runs between writing the object and recording it (tests race it).
        """
        report = SealReport(day)
        reference = self._days.document(day_id(day))
        fields = self._get(reference) or {}
        version = int(fields.get("version", 0))
        current = _current_batch(fields)
        primary = self.keys.keyring().primary_key_id
        if current is not None and not set(current.key_ids) - {primary}:
            report.already_sealed = True
            report.superseded = self._sweep_batches(day, keep=current.object_name)
            return report
        name = f"{batch_prefix(day)}v{version}-{secrets.token_hex(8)}.batch"
        first = day_start(day)
        entries = (
            entry
            for entry in self.index_entries(first, first + timedelta(days=1))
            if entry.status == ACTIVE
        )
        blob = self._bucket.blob(name)
        key_ids: set[int] = set()
        try:
            with blob.open(
                "wb",
                chunk_size=_BATCH_WRITE_CHUNK,
                content_type="application/octet-stream",
                if_generation_match=0,
                **STORAGE_CALL,
            ) as out:
                writer = FrameWriter(out)
                pairs = _in_order(
                    lambda entry: (entry, self._fetch_ciphertext(entry)),
                    entries,
                    self._fetch_workers,
                    window,
                )
                for entry, ciphertext in pairs:
                    if ciphertext is None:
                        continue  # erased meanwhile; the version check below refuses the seal
                    self._decode(entry.record_id, ciphertext)  # never seal a corrupt record
                    writer.add(entry.record_id, ciphertext)
                    key_ids.add(key_id_of(ciphertext) or 0)
            blob.reload(**STORAGE_CALL)
        except BaseException:
            self._delete_quietly(name)
            raise
        if on_written is not None:
            on_written()
        batch = SealedBatch(
            day=day,
            object_name=name,
            generation=int(blob.generation),
            version=version,
            count=writer.count,
            sha256=writer.sha256,
            key_ids=tuple(sorted(key_ids)),
            sealed_at=datetime.now(UTC),
        )
        if not self._record_batch(reference, batch):
            self._delete_quietly(name)
            report.notes.append("the day changed while it was sealed; it stays unsealed")
            logger.warning("seal refused: the day changed meanwhile", extra={"day": day_id(day)})
            return report
        report.sealed, report.records = True, writer.count
        previous = (fields.get("batch") or {}).get("object")
        if previous and previous != name:
            self._delete_quietly(previous)  # superseded: older keys, or a since-changed day
            report.superseded += 1
        report.superseded += self._sweep_batches(day, keep=name)
        logger.info("day sealed", extra={"day": day_id(day), "records": writer.count})
        return report

    def _record_batch(self, reference, batch: SealedBatch) -> bool:
        @firestore.transactional
        def record(transaction: firestore.Transaction) -> bool:
            snapshot = reference.get(transaction=transaction)
            fields = snapshot.to_dict() if snapshot.exists else {}
            if int(fields.get("version", 0)) != batch.version:
                return False
            transaction.set(
                reference, {"day": day_id(batch.day), "batch": batch.to_fields()}, merge=True
            )
            return True

        try:
            return record(self._client.transaction())
        except TRANSIENT_ERRORS as error:
            raise unavailable("Firestore", error) from error

    def _sweep_batches(self, day: date, keep: str | None, everything: bool = False) -> int:
        """Delete the day's batch objects other than `keep`: all of them for an erase (no copy
        of the record may survive), else only strays older than a seal could take."""
        deleted = 0
        now = datetime.now(UTC)
        try:
            for blob in self._bucket.list_blobs(prefix=batch_prefix(day), **STORAGE_CALL):
                if blob.name == keep:
                    continue
                if everything or now - (blob.time_created or now) >= STRAY_BATCH_AGE:
                    self._delete_quietly(blob.name)
                    deleted += 1
        except _STORAGE_ERRORS as error:
            raise unavailable("Cloud Storage", error) from error
        return deleted

    def _delete_quietly(self, name: str) -> None:
        """Delete an object; one already gone is not an error (a retry, a race)."""
        try:
            self._bucket.blob(name).delete(**STORAGE_CALL)
        except google_exceptions.NotFound:
            pass
        except _STORAGE_ERRORS as error:
            raise unavailable("Cloud Storage", error) from error

    def _get(self, reference) -> dict | None:
        try:
            snapshot = reference.get()
        except TRANSIENT_ERRORS as error:
            raise unavailable("Firestore", error) from error
        return snapshot.to_dict() if snapshot.exists else None

    # -- maintenance ---------------------------------------------------------------------
    def erase(self, record_id: str, erased_at: datetime) -> IndexEntry:
        """Delete the record's object and mark its index entry erased (no PHI is kept)."""
        entry = self.index_entry(record_id)
        if entry is None:
            raise NotFoundError(f"record {record_id} not found")
        self._delete_quietly(entry.object_name)  # gone already after an interrupted erase
        fields = {"status": ERASED, "erased_at": erased_at, "key_id": None}
        batch = self._client.batch()
        batch.update(self._index.document(record_id), fields)
        # The day's batch holds a copy of the record: unseal the day in the same write, then
        # delete every batch object of that day (a rerun of an interrupted erase does too).
        batch.set(*self._day_bump(entry.submitted_at, batch=firestore.DELETE_FIELD), merge=True)
        try:
            batch.commit()
        except TRANSIENT_ERRORS as error:
            raise unavailable("Firestore", error) from error
        self._sweep_batches(day_of(entry.submitted_at), keep=None, everything=True)
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


def _in_order(
    work: Callable[[IndexEntry], _T], entries: Iterable[IndexEntry], workers: int, window: int
) -> Iterator[_T]:
    """Run `work` on each entry in a thread pool; yield results in order, `window` in flight."""
    pending: deque[Future[_T]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="archive-fetch") as pool:
        try:
            for entry in entries:
                pending.append(pool.submit(work, entry))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _current_batch(fields: dict) -> SealedBatch | None:
    """The day's batch if it was sealed at the day's current version, else None."""
    sealed = fields.get("batch")
    if not sealed or int(sealed.get("version", -1)) != int(fields.get("version", 0)):
        return None
    return SealedBatch.from_fields(date.fromisoformat(fields["day"]), sealed)


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
