"""Reading many records in order, for exports: the index in pages, a read plan that takes
sealed day batches where they are current and single objects elsewhere, fetched in parallel."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as google_exceptions
from google.cloud import firestore

from repositories.archive.model import (
    IndexEntry,
    IndexRange,
    IndexStatus,
    ReadStats,
    current_batch,
    day_of,
    day_start,
    entry_from,
    in_order,
    integrity_failure,
)
from repositories.archive.objects import ArchiveObjects
from repositories.batches import (
    BatchFormatError,
    FrameReader,
    SealedBatch,
    day_id,
)
from repositories.clients import (
    FIRESTORE_CALL,
    STORAGE_CALL,
    STORAGE_ERRORS,
    translated,
)
from service.domain.record import (
    IntakeRecord,
)

logger = logging.getLogger(__name__)

# Larger pages mean fewer queries; each page costs more on the emulator as the index grows.
PAGE_SIZE = 2000
# Batches are read in ranged GETs of this size: few requests, bounded memory.
BATCH_READ_CHUNK = 8 * 1024 * 1024


class ArchiveReads(ArchiveObjects):
    """Stream records for a date range, as fast as Storage allows, in submission order."""

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

    def count_indexed(self, start: datetime | None = None, end: datetime | None = None) -> int:
        """How many records the index holds in [start, end), erased ones included: one
        aggregation query, not a read of each entry (an export's expected size)."""
        query: Any = self._index
        if start is not None:
            query = query.where(filter=firestore.FieldFilter("submitted_at", ">=", start))
        if end is not None:
            query = query.where(filter=firestore.FieldFilter("submitted_at", "<", end))
        with translated("Firestore"):
            result = query.count().get(**FIRESTORE_CALL)
        return int(result[0][0].value)

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
            page = query.limit(PAGE_SIZE)
            if last is not None:
                page = page.start_after(last)
            with translated("Firestore"):
                snapshots = list(page.stream())
            yield [entry_from(snapshot.id, snapshot.to_dict() or {}) for snapshot in snapshots]
            if len(snapshots) < PAGE_SIZE:
                return
            last = snapshots[-1]

    def index_page(
        self,
        limit: int,
        start: datetime | None = None,
        end: datetime | None = None,
        after: str | None = None,
    ) -> list[IndexEntry]:
        """Index entries with start <= submitted_at < end, newest first, `limit` of them,
        after the entry of record `after` (a page's cursor; unknown ids start at the top)."""
        query = self._index.order_by("submitted_at", direction=firestore.Query.DESCENDING)
        query = query.order_by("__name__", direction=firestore.Query.DESCENDING)
        if start is not None:
            query = query.where(filter=firestore.FieldFilter("submitted_at", ">=", start))
        if end is not None:
            query = query.where(filter=firestore.FieldFilter("submitted_at", "<", end))
        with translated("Firestore"):
            if after is not None:
                cursor = self._index.document(after).get()
                if cursor.exists:
                    query = query.start_after(cursor)
            snapshots = list(query.limit(limit).stream())
        return [entry_from(snapshot.id, snapshot.to_dict() or {}) for snapshot in snapshots]

    def fetch_records(self, entries: list[IndexEntry]) -> list[IntakeRecord | None]:
        """Fetch and decrypt these records in parallel, in order; None for an erased one."""
        active = [entry for entry in entries if entry.status == IndexStatus.ACTIVE]
        fetched = dict(
            zip(
                (entry.record_id for entry in active),
                in_order(self._fetch, active, self._fetch_workers, len(active) or 1),
                strict=True,
            )
        )
        return [fetched.get(entry.record_id) for entry in entries]

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
    ) -> list[SealedBatch | IndexRange]:
        """Split [start, end) into the whole days read from batches and the ranges between."""
        plan: list[SealedBatch | IndexRange] = []
        cursor = start
        for batch in self.current_batches(start, end):
            batch_start = day_start(batch.day)
            if cursor is None or cursor < batch_start:
                plan.append(IndexRange(cursor, batch_start))
            plan.append(batch)
            cursor = batch_start + timedelta(days=1)
        if cursor is None or end is None or cursor < end:
            plan.append(IndexRange(cursor, end))
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
        with translated("Firestore"):
            snapshots = list(query.stream())
        batches = []
        for snapshot in snapshots:
            batch = current_batch(snapshot.to_dict() or {})
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
        active = (entry for entry in entries if entry.status == IndexStatus.ACTIVE)
        for record in in_order(self._fetch, active, self._fetch_workers, window):
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
        with translated("Cloud Storage", STORAGE_ERRORS):
            try:
                with blob.open("rb", chunk_size=BATCH_READ_CHUNK, **STORAGE_CALL) as stream:
                    reader = FrameReader(stream)
                    for record_id, ciphertext in reader:
                        record = self._decode(record_id, ciphertext)
                        key = (record.submitted_at, record_id)
                        if day_of(record.submitted_at) != batch.day:
                            raise integrity_failure(
                                record_id, f"it is in the {label} of another day"
                            )
                        if last is not None and key <= last:
                            raise integrity_failure(record_id, f"it is out of order in the {label}")
                        last = key
                        stats.from_batches += 1
                        yield record
                if reader.count != batch.count or reader.sha256 != batch.sha256:
                    raise integrity_failure(label, "it does not match its day's seal")
                stats.batches_used += 1
                return
            except google_exceptions.NotFound:
                logger.info("sealed batch gone while read; reading the rest of its day one by one",
                            extra={"day": day_id(batch.day)})  # fmt: skip
            except BatchFormatError as error:
                raise integrity_failure(label, str(error)) from None
        stats.batch_fallbacks += 1
        first = day_start(batch.day)
        rest = (
            entry
            for entry in self.index_entries(first, first + timedelta(days=1))
            if last is None or entry.order_key > last
        )
        yield from self._fetched_records(rest, window, stats)
