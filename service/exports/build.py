"""Build an export: read the records of a date range, write CSV or Excel, zip it with the
day's password, store it, and answer with a signed download link."""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyzipper

from repositories.archive import ReadStats
from repositories.exports import ExportEntry, ExportFormat
from service.accounts.ratelimit import RequestOrigin
from service.domain.passwords import export_password, today_utc
from service.domain.record import IntakeRecord
from service.errors import (
    InvalidInputError,
)
from service.exports.audit import audit_export_event
from service.exports.formats import write_csv, write_xlsx
from service.exports.links import sign_download_token
from service.exports.ports import ExportDeps

logger = logging.getLogger(__name__)


FORMATS = {  # the `format` a request may give
    "csv": ExportFormat.CSV,
    "xlsx": ExportFormat.XLSX,
    "excel": ExportFormat.XLSX,  # the seed's name
}


MEMBER_NAMES = {ExportFormat.CSV: "intakes.csv", ExportFormat.XLSX: "intakes.xlsx"}


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


_COPY_CHUNK = 1024 * 1024


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
    wanted = (format_value or "csv").strip().lower()
    if wanted not in FORMATS:
        raise InvalidInputError("format must be csv or xlsx (or excel)")
    filters = ExportFilters(_parse_day("from", from_value), _parse_day("to", to_value))
    if filters.date_from and filters.date_to and filters.date_from > filters.date_to:
        raise InvalidInputError("from must not be after to")
    return FORMATS[wanted], filters


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
        details.update(_filter_details(file_format, filters))
        with components.export_slots.hold(provider_id):
            created = _create(components, provider_id, export_id, file_format, filters, now)
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


def _create(
    components: ExportDeps,
    provider_id: str,
    export_id: str,
    file_format: ExportFormat,
    filters: ExportFilters,
    now: datetime | None,
    progress: Callable[[int], None] | None = None,
) -> CreatedExport:
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
    """Write the file into an AES-256 zip at folder/export.zip; return the count and timings.

    CSV is streamed straight into the encrypted zip entry; XLSX (itself a zip that openpyxl
    must finish first) goes through a temporary file. Either way only the current rows are in
    memory, and the cleartext never leaves this process's temporary folder.
    """
    timed = _TimedRecords(records, progress)
    began = time.perf_counter()
    zipping = 0.0
    with pyzipper.AESZipFile(
        folder / "export.zip", "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
    ) as archive:
        archive.setpassword(password.encode())
        archive.setencryption(pyzipper.WZ_AES, nbits=256)
        # The member carries the export's time (UTC), not the server's clock or a file's mtime.
        member = archive.zipinfo_cls(MEMBER_NAMES[file_format], created_at.timetuple()[:6])
        member.compress_type = pyzipper.ZIP_DEFLATED
        member.external_attr = 0o600 << 16
        if file_format == ExportFormat.CSV:
            with archive.open(member, "w") as entry:
                count = write_csv(timed, entry)
        else:
            sheet_path = folder / MEMBER_NAMES[file_format]
            count = write_xlsx(timed, sheet_path)
            zipping = time.perf_counter()
            with open(sheet_path, "rb") as source, archive.open(member, "w") as entry:
                shutil.copyfileobj(source, entry, _COPY_CHUNK)
            sheet_path.unlink()
            zipping = time.perf_counter() - zipping
    total = time.perf_counter() - began
    return count, {
        "fetch_wait": timed.waited,  # blocked on iter_records: index reads, GETs, decryption
        "write": total - timed.waited - zipping,  # CSV: includes deflate and AES inline
        "zip": zipping,
    }


class _TimedRecords:
    """Iterate records while adding up the time spent waiting for the next one, and tell
    `progress` how many were handed out so far."""

    def __init__(
        self, records: Iterator[IntakeRecord], progress: Callable[[int], None] | None = None
    ) -> None:
        self._records = records
        self._progress = progress
        self.waited = 0.0

    def __iter__(self) -> Iterator[IntakeRecord]:
        handed = 0
        try:
            while True:
                began = time.perf_counter()
                try:
                    record = next(self._records)
                except StopIteration:
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


def _filter_details(file_format: ExportFormat, filters: ExportFilters) -> dict[str, Any]:
    return {
        "format": file_format,
        "from": filters.date_from.isoformat() if filters.date_from else None,
        "to": filters.date_to.isoformat() if filters.date_to else None,
    }
