"""The archive's values: index entries, read statistics, seal reports, integrity errors,
and how objects and index documents are named and written (no I/O)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from repositories.batches import (
    SealedBatch,
)
from service.domain.record import (
    is_record_id,
)
from service.errors import ServiceError

logger = logging.getLogger(__name__)

INDEX_COLLECTION = "intakes"
OBJECT_PREFIX = "intakes/"
_BATCH_WRITE_CHUNK = 8 * 1024 * 1024  # a multiple of 256 KiB, as resumable uploads require
# A batch object no day document names is deleted once it is this old (a crashed seal's);
# younger ones may belong to a seal still running.
STRAY_BATCH_AGE = timedelta(minutes=15)
_T = TypeVar("_T")


class IndexStatus(StrEnum):
    """An index entry's `status`: the record is archived, or erased and its object deleted."""

    ACTIVE = "active"
    ERASED = "erased"


class RecordIntegrityError(ServiceError):
    """An archived record failed authentication or validation; never returned as data."""

    status = 500
    code = "record_integrity"

    def __init__(self, record_id: str, reason: str) -> None:
        self.record_id = record_id
        self.reason = reason
        super().__init__(f"record {record_id} failed its integrity check: {reason}")


class Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def increment(self) -> int:
        with self._lock:
            self.value += 1
            return self.value


INTEGRITY_FAILURES = Counter()  # records that failed their check, for support staff


@dataclass(frozen=True)
class IndexEntry:
    record_id: str
    submitted_at: datetime
    object_name: str
    key_id: int | None
    schema_version: int
    status: IndexStatus
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
class IndexRange:
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


def current_batch(fields: dict[str, Any]) -> SealedBatch | None:
    """The day's batch if it was sealed at the day's current version, else None."""
    sealed = fields.get("batch")
    if not sealed or int(sealed.get("version", -1)) != int(fields.get("version", 0)):
        return None
    return SealedBatch.from_fields(date.fromisoformat(fields["day"]), sealed)


def integrity_failure(record_id: str, reason: str) -> RecordIntegrityError:
    total = INTEGRITY_FAILURES.increment()
    logger.error(
        "archived record failed its integrity check",
        extra={"record_id": record_id, "reason": reason, "integrity_failures_total": total},
    )
    return RecordIntegrityError(record_id, reason)


def entry_fields(entry: IndexEntry) -> dict[str, object]:
    return {
        "submitted_at": entry.submitted_at,
        "object": entry.object_name,
        "key_id": entry.key_id,
        "schema_version": entry.schema_version,
        "status": entry.status,
        "erased_at": entry.erased_at,
    }


def entry_from(record_id: str, data: dict[str, Any]) -> IndexEntry:
    return IndexEntry(
        record_id=record_id,
        submitted_at=data["submitted_at"],
        object_name=data["object"],
        key_id=data.get("key_id"),
        schema_version=data.get("schema_version", 1),
        status=data.get("status", IndexStatus.ACTIVE),
        erased_at=data.get("erased_at"),
    )


def in_order(
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
