"""Completed intakes for staff: a page at a time, newest first, and one record in full.

Only the records of the page shown are decrypted, and every page and every record view is an
audit event naming who looked at which record ids (never what the records say).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from service.accounts.ratelimit import RequestOrigin, audit_request
from service.domain.record import IntakeRecord, is_record_id
from service.errors import InvalidInputError, NotFoundError, ServiceError
from service.portal.ports import PortalDeps

PAGE_SIZE = 20


@dataclass(frozen=True)
class IntakeRow:
    record_id: str
    submitted_at: datetime
    record: IntakeRecord | None  # None: erased since it was indexed


@dataclass(frozen=True)
class IntakePage:
    day: date | None
    rows: list[IntakeRow]
    next_after: str | None  # the cursor of the next (older) page, when there may be one

    @property
    def days(self) -> list[tuple[date, list[IntakeRow]]]:
        """The rows grouped by UTC day, newest first."""
        grouped: dict[date, list[IntakeRow]] = {}
        for row in self.rows:
            grouped.setdefault(row.submitted_at.astimezone(UTC).date(), []).append(row)
        return list(grouped.items())


def parse_day(value: str | None) -> date | None:
    """Read an optional YYYY-MM-DD day filter, or raise 400."""
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInputError("day must look like 2026-12-31") from None


def intake_page(
    deps: PortalDeps,
    actor: str,
    origin: RequestOrigin,
    day: date | None = None,
    after: str | None = None,
) -> IntakePage:
    """Return one page of completed intakes (decrypted for this page only); audit it."""
    if after is not None and not is_record_id(after):
        raise InvalidInputError("not a page of intakes")
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None
    end = start + timedelta(days=1) if start else None
    archive = deps.repos.archive
    entries = archive.index_page(PAGE_SIZE, start, end, after)
    records = archive.fetch_records(entries)
    rows = [
        IntakeRow(entry.record_id, entry.submitted_at, record)
        for entry, record in zip(entries, records, strict=True)
    ]
    shown = [row.record_id for row in rows if row.record is not None]
    _audit(deps, "portal.intakes.list", actor, origin, {"record_ids": shown, "day": str(day)})
    next_after = entries[-1].record_id if len(entries) == PAGE_SIZE else None
    return IntakePage(day, rows, next_after)


def intake_record(
    deps: PortalDeps, actor: str, origin: RequestOrigin, record_id: str
) -> IntakeRecord:
    """Return one record, decrypted; audit the view (or the attempt)."""
    if not is_record_id(record_id):
        raise NotFoundError("no such record")
    try:
        record = deps.repos.archive.read(record_id)
    except ServiceError as error:
        details: dict[str, object] = {"record_id": record_id, "reason": type(error).__name__}
        _audit(deps, "portal.intakes.view", actor, origin, details, outcome="failure")
        raise
    _audit(deps, "portal.intakes.view", actor, origin, {"record_id": record_id})
    return record


def _audit(
    deps: PortalDeps,
    action: str,
    actor: str,
    origin: RequestOrigin,
    details: dict[str, object],
    outcome: str = "success",
) -> None:
    audit_request(
        deps.repos.audit, action, outcome, actor, origin, {**details, "path": origin.path}
    )
