"""Provider exports: build the file from the archive, zip it under the day's password, store
it, sign an expiring download link, stream the zip back, purge old zips. Every creation and
every download attempt is an audit event; none holds patient data or the link's token.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyzipper
from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from repositories.archive import ReadStats
from repositories.audit import AuditEvent
from repositories.exports import PURGED, ExportEntry
from service.accounts.ratelimit import RequestOrigin, audit_throttle
from service.domain.passwords import export_password, today_utc
from service.domain.record import IntakeRecord
from service.errors import (
    GoneError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServiceError,
)
from service.exports.formats import write_csv, write_xlsx

if TYPE_CHECKING:  # the wiring is the shell's; a use case only names its type
    from service.shell.components import Components


logger = logging.getLogger(__name__)

FORMATS = {"csv": "csv", "xlsx": "xlsx", "excel": "xlsx"}  # "excel": the seed's name
MEMBER_NAMES = {"csv": "intakes.csv", "xlsx": "intakes.xlsx"}
DOWNLOAD_SALT = "export-download"
PURGE_AFTER = timedelta(hours=24)
_EXPORT_ID = re.compile(r"[0-9a-f]{32}")
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
    format: str
    records: int
    token: str
    expires_at: datetime
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went
    read: ReadStats = field(default_factory=ReadStats)  # sealed batches or one GET per record


@dataclass(frozen=True)
class ExportDownload:
    export_id: str
    file_name: str
    size: int
    chunks: Iterator[bytes]
    password_date: date  # the UTC day whose password opens the zip: the day it was built


@dataclass(frozen=True)
class PurgeReport:
    exports: int  # documents marked purged, their zips deleted
    orphans: int  # zips without a live document (an export that failed half-way)


def parse_request(
    format_value: str | None, from_value: str | None, to_value: str | None
) -> tuple[str, ExportFilters]:
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
    components: Components,
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
        _audit(components, "export.create", "failure", provider_id, origin, details, error)
        raise
    details["records"] = created.records
    _audit(components, "export.create", "success", provider_id, origin, details)
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
    components: Components,
    provider_id: str,
    export_id: str,
    file_format: str,
    filters: ExportFilters,
    now: datetime | None,
) -> CreatedExport:
    components.failpoints.hit("export.building")
    began = time.perf_counter()
    created_at = now or datetime.now(UTC)
    password_day = today_utc(created_at)
    password = export_password(components.config.zip_password, password_day).password
    read = ReadStats()
    records = components.repos.archive.iter_records(filters.start, filters.end, stats=read)
    with tempfile.TemporaryDirectory(prefix="export-") as folder:
        count, seconds = _build_zip(Path(folder), file_format, records, password, created_at)
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
    file_format: str,
    records: Iterator[IntakeRecord],
    password: str,
    created_at: datetime,
) -> tuple[int, dict[str, float]]:
    """Write the file into an AES-256 zip at folder/export.zip; return the count and timings.

    CSV is streamed straight into the encrypted zip entry; XLSX (itself a zip that openpyxl
    must finish first) goes through a temporary file. Either way only the current rows are in
    memory, and the cleartext never leaves this process's temporary folder.
    """
    timed = _TimedRecords(records)
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
        if file_format == "csv":
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
    """Iterate records while adding up the time spent waiting for the next one."""

    def __init__(self, records: Iterator[IntakeRecord]) -> None:
        self._records = records
        self.waited = 0.0

    def __iter__(self) -> Iterator[IntakeRecord]:
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
        finally:
            close = getattr(self._records, "close", None)
            if close is not None:
                close()  # stops iter_records' fetch pool when a write fails half-way


def _filter_details(file_format: str, filters: ExportFilters) -> dict[str, Any]:
    return {
        "format": file_format,
        "from": filters.date_from.isoformat() if filters.date_from else None,
        "to": filters.date_to.isoformat() if filters.date_to else None,
    }


# -- signed links ------------------------------------------------------------------------------
class _ClockSigner(TimestampSigner):
    """A TimestampSigner whose clock can be given: links are signed and checked at `now`."""

    def __init__(self, *args: Any, now: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._now = now

    def get_timestamp(self) -> int:
        return int(self._now if self._now is not None else time.time())


def _serializer(secret_key: str, now: datetime | None) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        secret_key,
        salt=DOWNLOAD_SALT,
        signer=_ClockSigner,
        signer_kwargs={"now": now.timestamp() if now else None},
    )


def sign_download_token(
    secret_key: str, export_id: str, provider_id: str, issued_at: datetime, ttl_seconds: int
) -> tuple[str, datetime]:
    """Sign {export_id, provider_id} at issued_at; return the token and when it expires."""
    token = _serializer(secret_key, issued_at).dumps(
        {"export_id": export_id, "provider_id": provider_id}
    )
    signed_at = datetime.fromtimestamp(int(issued_at.timestamp()), UTC)
    return token, signed_at + timedelta(seconds=ttl_seconds)


def read_download_token(
    secret_key: str, token: str | None, ttl_seconds: int, now: datetime | None = None
) -> tuple[str, str]:
    """Return (export_id, provider_id) from a token; 403 when forged or tampered, 410 expired."""
    if not token:
        raise PermissionDeniedError("a signed download link is required")
    try:
        payload = _serializer(secret_key, now).loads(token, max_age=ttl_seconds)
    except SignatureExpired:  # checked after the signature: a forged token never gets here
        raise GoneError("this download link has expired; request a new export") from None
    except BadData:
        raise PermissionDeniedError("this download link is not valid") from None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("export_id"), str)
        or not isinstance(payload.get("provider_id"), str)
    ):
        raise PermissionDeniedError("this download link is not valid")
    return payload["export_id"], payload["provider_id"]


# -- downloads ---------------------------------------------------------------------------------
def open_download(
    components: Components,
    export_id: str,
    token: str | None,
    origin: RequestOrigin | None = None,
    now: datetime | None = None,
) -> ExportDownload:
    """Check a signed link and open its zip for streaming; audit the attempt either way."""
    origin = origin or RequestOrigin()
    # The path is caller input: only an id of the right shape goes into the audit log.
    details: dict[str, Any] = {"export_id": export_id if _EXPORT_ID.fullmatch(export_id) else None}
    actor: list[str | None] = [None]
    try:
        entry = _authorise_download(components, export_id, token, now, actor)
        stream = components.repos.exports.open_zip(entry.object_name)
        if stream is None:
            raise GoneError(f"export {export_id} has been purged; request a new export")
    except Exception as error:  # audited, then raised on
        _audit(components, "export.download", "failure", actor[0], origin, details, error)
        raise
    details.update(format=entry.format, records=entry.records, size_bytes=stream.size)
    _audit(components, "export.download", "success", actor[0], origin, details)
    return ExportDownload(
        export_id=export_id,
        file_name=f"intakes-{export_id}.zip",
        size=stream.size,
        chunks=stream.chunks,
        password_date=entry.password_date,
    )


# Answers to a bad or stale link; a dependency outage (503) is not the caller's failure.
_LINK_FAILURES = (PermissionDeniedError, GoneError, NotFoundError)


def open_limited_download(
    components: Components, export_id: str, token: str | None, origin: RequestOrigin
) -> ExportDownload:
    """Open a download like `open_download`, counting failed links per address.

    A link correctly signed for this export is honoured whatever the address did before: it
    proves possession of a link we issued, and refusing it would let anyone sharing a clinic's
    address lock the clinic out. Any other link is a failure: past the limit it gets 429 with
    Retry-After, and one summary audit event per window instead of one event per attempt.
    """
    limiter = components.download_failures
    if _signed_for(components, export_id, token):
        try:
            return open_download(components, export_id, token, origin)
        except _LINK_FAILURES:
            # A link we issued whose export or provider is gone: answered and audited as
            # such, since only a holder of our own signed link can get here; still counted.
            limiter.record_failure(origin.ip)
            raise
    throttle = limiter.record_failure(origin.ip)
    if throttle is not None:
        audit_throttle(components.repos.audit, "export.download", limiter, throttle, origin)
        raise RateLimitedError(
            "too many failed download attempts; try again later",
            retry_after=throttle.retry_after,
        )
    # Under the limit: the same checks fail again there, with the reason audited (403 or 410).
    return open_download(components, export_id, token, origin)


def _signed_for(components: Components, export_id: str, token: str | None) -> bool:
    """Tell whether the token is ours, unexpired and names this export (no I/O)."""
    config = components.config
    try:
        signed_export_id, _ = read_download_token(
            config.secret_key, token, config.export_link_ttl_seconds
        )
    except (ServiceError, BadData):
        return False
    return signed_export_id == export_id


def _authorise_download(
    components: Components,
    export_id: str,
    token: str | None,
    now: datetime | None,
    actor: list[str | None],
) -> ExportEntry:
    config = components.config
    signed_export_id, provider_id = read_download_token(
        config.secret_key, token, config.export_link_ttl_seconds, now
    )
    actor[0] = provider_id
    if signed_export_id != export_id:
        raise PermissionDeniedError("this download link is for another export")
    entry = components.repos.exports.get(export_id)
    if entry is None:
        raise NotFoundError(f"export {export_id} not found")
    provider = components.repos.providers.get(provider_id)
    if provider is None or provider.revoked or entry.provider_id != provider_id:
        raise PermissionDeniedError("the provider account of this link is no longer active")
    if entry.status == PURGED:
        raise GoneError(f"export {export_id} has been purged; request a new export")
    return entry


# -- purge -------------------------------------------------------------------------------------
def purge_exports(
    components: Components,
    older_than: timedelta = PURGE_AFTER,
    now: datetime | None = None,
    actor: str = "operator:cli",
) -> PurgeReport:
    """Delete export zips older than `older_than` and mark their documents purged."""
    now = now or datetime.now(UTC)
    cutoff = now - older_than
    exports = components.repos.exports
    purged = 0
    for entry in exports.ready_before(cutoff):
        exports.delete_zip(entry.object_name)
        exports.mark_purged(entry.export_id, now)
        _audit(
            components,
            "export.purge",
            "success",
            actor,
            RequestOrigin(),
            {"export_id": entry.export_id, "created_at": entry.created_at.isoformat()},
        )
        purged += 1
    # Zips with no live document: a failure between upload and create, or a purge that
    # marked the document but was stopped before the delete went through.
    orphans = 0
    for object_name, export_id in exports.zip_objects_before(cutoff):
        entry = exports.get(export_id) if _EXPORT_ID.fullmatch(export_id) else None
        if (entry is None or entry.status == PURGED) and exports.delete_zip(object_name):
            orphans += 1
    logger.info("exports purged", extra={"exports": purged, "orphans": orphans})
    return PurgeReport(exports=purged, orphans=orphans)


def _audit(
    components: Components,
    action: str,
    outcome: str,
    actor: str | None,
    origin: RequestOrigin,
    details: dict[str, Any],
    error: Exception | None = None,
) -> None:

    if isinstance(error, ServiceError):
        # Codes and our own messages only: they name parameters and ids, never patient data.
        details = {**details, "reason": error.code, "message": str(error)[:200]}
    elif error is not None:
        details = {**details, "reason": "internal", "message": type(error).__name__}
    components.repos.audit.append(
        AuditEvent(
            action=action,
            outcome=outcome,
            at=datetime.now(UTC),
            actor=actor,
            ip=origin.ip,
            user_agent=origin.user_agent,
            details=details,
        )
    )
