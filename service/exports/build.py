"""Build an export: read the records of a date range, write them in the format asked for (CSV,
Excel or FHIR; see registry.py), zip them with the day's password, store the zip, and answer
with a signed download link."""

from __future__ import annotations

import logging
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pyzipper

from repositories.archive import ReadStats
from repositories.exports import ExportEntry, ExportFormat
from service.accounts.ratelimit import RequestOrigin
from service.domain.passwords import export_password, today_utc
from service.domain.record import IntakeRecord
from service.errors import (
    InvalidInputError,
)
from service.exports import registry
from service.exports.audit import audit_export_event
from service.exports.links import sign_download_token
from service.exports.ports import ExportDeps

logger = logging.getLogger(__name__)


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class ExportFilters:
    """UTC days, both inclusive, on submitted_at; None leaves that side open."""

    date_from: date | None = None
    date_to: date | None = None

    @property
    def start(self) -> datetime | None:
        return _midnight(self.date_from) if self.date_from else None

    @property
    def end(self) -> datetime | None:
        """The exclusive end: midnight after date_to."""
        if self.date_to is None or self.date_to == date.max:
            return None
        return _midnight(self.date_to + timedelta(days=1))


@dataclass(frozen=True)
class CreatedExport:
    export_id: str
    format: ExportFormat
    records: int
    token: str
    expires_at: datetime
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went
    read: ReadStats = field(default_factory=ReadStats)  # sealed batches or one GET per record


def parse_request(
    format_value: str | None, from_value: str | None, to_value: str | None
) -> tuple[ExportFormat, ExportFilters]:
    """Validate the query parameters; raise InvalidInputError naming the bad one."""
    file_format = registry.by_name(format_value or "csv")
    if file_format is None:
        raise InvalidInputError("format must be one of " + ", ".join(registry.accepted_names()))
    filters = ExportFilters(_parse_day("from", from_value), _parse_day("to", to_value))
    if filters.date_from and filters.date_to and filters.date_from > filters.date_to:
        raise InvalidInputError("from must not be after to")
    return file_format.format, filters


def _parse_day(name: str, value: str | None) -> date | None:
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    try:
        if not _DAY.fullmatch(text):  # fromisoformat also takes 20261120 and week dates
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(f"{name} must be a date as YYYY-MM-DD (UTC)") from None


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def create_export(
    components: ExportDeps,
    provider_id: str,
    format_value: str | None,
    from_value: str | None = None,
    to_value: str | None = None,
    origin: RequestOrigin | None = None,
    now: datetime | None = None,
) -> CreatedExport:
    """Build an export zip from the archive, store it and return a signed download token.

    Raises RateLimitedError (429) while the account or this process already runs as many
    exports as it may (`ExportSlots`); the slot is given back however the export ends.
    """
    origin = origin or RequestOrigin()
    export_id = secrets.token_hex(16)
    details: dict[str, Any] = {"export_id": export_id}
    try:
        file_format, filters = parse_request(format_value, from_value, to_value)
        details.update(filter_details(file_format, filters))
        with components.export_slots.hold(provider_id):
            created = build_export(components, provider_id, export_id, file_format, filters, now)
    except Exception as error:  # audited, then raised on: a failed export is never silent
        audit_export_event(
            components, "export.create", "failure", provider_id, origin, details, error
        )
        raise
    details["records"] = created.records
    audit_export_event(components, "export.create", "success", provider_id, origin, details)
    logger.info(
        "export created",
        extra={
            **details,
            "provider_id": provider_id,
            "seconds": created.seconds,
            "read": asdict(created.read),  # from sealed batches or one by one
        },
    )
    return created


def build_export(
    components: ExportDeps,
    provider_id: str,
    export_id: str,
    file_format: ExportFormat,
    filters: ExportFilters,
    now: datetime | None,
    progress: Callable[[int], None] | None = None,
) -> CreatedExport:
    """Build, store and record one export (no audit, no slot: the callers do those);
    `progress` hears how many records were written so far."""
    components.failpoints.hit("export.building")
    began = time.perf_counter()
    created_at = now or datetime.now(UTC)
    password_day = today_utc(created_at)
    password = export_password(components.config.zip_password, password_day).password
    read = ReadStats()
    records = components.repos.archive.iter_records(filters.start, filters.end, stats=read)
    with tempfile.TemporaryDirectory(prefix="export-") as folder:
        count, seconds = _build_zip(
            Path(folder), file_format, records, password, created_at, progress
        )
        uploading = time.perf_counter()
        object_name, size = components.repos.exports.store_zip(
            export_id, Path(folder) / "export.zip"
        )
        seconds["upload"] = time.perf_counter() - uploading
    token, expires_at = sign_download_token(
        components.config.secret_key,
        export_id,
        provider_id,
        created_at,
        components.config.export_link_ttl_seconds,
    )
    components.repos.exports.create(
        ExportEntry(
            export_id=export_id,
            provider_id=provider_id,
            created_at=created_at,
            format=file_format,
            date_from=filters.date_from,
            date_to=filters.date_to,
            records=count,
            password_date=password_day,
            object_name=object_name,
            size_bytes=size,
            link_expires_at=expires_at,
        )
    )
    seconds["total"] = time.perf_counter() - began
    return CreatedExport(export_id, file_format, count, token, expires_at, seconds, read)


def _build_zip(
    folder: Path,
    file_format: ExportFormat,
    records: Iterator[IntakeRecord],
    password: str,
    created_at: datetime,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, dict[str, float]]:
    """Write the format's files into an AES-256 zip at folder/export.zip; return the count and
    timings.

    Each format streams its records into the encrypted members (or, for XLSX and the FHIR
    files other than the first, through temporary files in folder), so only the current
    records are in memory, and the cleartext never leaves this process's temporary folder.
    """
    timed = _TimedRecords(records, progress)
    began = time.perf_counter()
    with pyzipper.AESZipFile(
        folder / "export.zip", "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
    ) as archive:
        archive.setpassword(password.encode())
        archive.setencryption(pyzipper.WZ_AES, nbits=256)
        entry = registry.of(file_format)
        members = _Members(archive, folder, created_at, entry.compress_level)
        count = entry.write(timed, members)
    ended = time.perf_counter()
    records_ended = timed.ended_at or ended
    return count, {
        "fetch_wait": timed.waited,  # blocked on iter_records: index reads, GETs, decryption
        # Writing rows and resources as the records arrive (CSV and the first FHIR file are
        # deflated and encrypted inline), then, after the last record, finishing the files
        # written aside (XLSX, the other FHIR files) and copying them into the zip.
        "write": records_ended - began - timed.waited,
        "zip": ended - records_ended,
    }


class _Members:
    """Open new members of an export's zip, each stamped with the export's time."""

    def __init__(
        self,
        archive: pyzipper.AESZipFile,
        folder: Path,
        created_at: datetime,
        compress_level: int | None,
    ) -> None:
        self._archive = archive
        self._created_at = created_at
        self._compress_level = compress_level
        self.folder = folder

    def open(self, name: str) -> AbstractContextManager[BinaryIO]:
        """Open a new member of the zip for writing."""
        # The member carries the export's time (UTC), not the server's clock or a file's mtime.
        member = self._archive.zipinfo_cls(name, self._created_at.timetuple()[:6])
        member.compress_type = pyzipper.ZIP_DEFLATED
        member.external_attr = 0o600 << 16
        # What ZipFile.open sets from its own `compresslevel` for a member given by name
        # (pyzipper 0.4.0, as zipfile in Python 3.11); a ZipInfo given in carries its own.
        member._compresslevel = self._compress_level
        # A member's size is not known before it is written: zip64 headers from the start, so
        # a file past 2 GiB (a FHIR file of about a million records) does not stop the export.
        return self._archive.open(member, "w", force_zip64=True)


class _TimedRecords:
    """Iterate records while adding up the time spent waiting for the next one, and tell
    `progress` how many were handed out so far."""

    def __init__(
        self, records: Iterator[IntakeRecord], progress: Callable[[int], None] | None = None
    ) -> None:
        self._records = records
        self._progress = progress
        self.waited = 0.0
        self.ended_at: float | None = None  # when the last record had been read

    def __iter__(self) -> Iterator[IntakeRecord]:
        handed = 0
        try:
            while True:
                began = time.perf_counter()
                try:
                    record = next(self._records)
                except StopIteration:
                    self.ended_at = time.perf_counter()
                    return
                finally:
                    self.waited += time.perf_counter() - began
                yield record
                handed += 1
                if self._progress is not None:
                    self._progress(handed)
        finally:
            close = getattr(self._records, "close", None)
            if close is not None:
                close()  # stops iter_records' fetch pool when a write fails half-way


def filter_details(file_format: ExportFormat, filters: ExportFilters) -> dict[str, Any]:
    return {
        "format": file_format,
        "from": filters.date_from.isoformat() if filters.date_from else None,
        "to": filters.date_to.isoformat() if filters.date_to else None,
    }
