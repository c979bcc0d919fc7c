"""Archive service functions: archive, read, erase, rebuild the index, re-encrypt."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime

from repositories.archive import IndexEntry, IndexStatus, RecordIntegrityError, SealReport
from repositories.audit import AuditEvent
from service.archive.ports import ArchiveDeps
from service.domain.identity import PatientIdentity
from service.domain.record import IntakeRecord
from service.errors import GoneError, NotFoundError

logger = logging.getLogger(__name__)


def archive_record(components: ArchiveDeps, record: IntakeRecord) -> IndexEntry:
    """Encrypt and archive a completed record; safe to call again for the same record."""
    entry = components.repos.archive.archive(record)
    logger.info("record archived", extra={"record_id": entry.record_id, "key_id": entry.key_id})
    return entry


def erase_record(
    components: ArchiveDeps,
    record_id: str,
    actor: str,
    reason: str = "request",
    clear_conversation: bool = True,
) -> IndexEntry:
    """Erase an archived record and every copy of it, and audit what went.

    The object and every sealed batch of its day are deleted and the index entry marked; every
    live export zip that may hold it is deleted and its download links answer 410; and, unless
    the caller is the conversation itself (a patient's "delete my data", whose new state
    already forgets the record), the conversation stops naming it.
    """
    archive = components.repos.archive
    identity = _identity_of(components, record_id) if clear_conversation else None
    now = datetime.now(UTC)
    entry = archive.erase(record_id, now)
    exports = _purge_exports_holding(components, entry, now)
    conversation = (
        components.repos.conversations.forget_record(identity, record_id, now)
        if identity is not None
        else None
    )
    components.repos.audit.append(
        AuditEvent(
            action="record.erase",
            outcome="success",
            at=entry.erased_at or now,
            actor=actor,
            details={
                "record_id": record_id,
                "reason": reason,
                "removed": {
                    "object": entry.object_name,
                    "batches_of_day": entry.submitted_at.date().isoformat(),
                    "exports": exports,
                    "conversation": conversation is not None,
                },
            },
        )
    )
    logger.info("record erased", extra={"record_id": record_id, "exports": len(exports)})
    return entry


def _identity_of(components: ArchiveDeps, record_id: str) -> PatientIdentity | None:
    """Who the record belongs to, read before it is erased (None once it is gone)."""
    try:
        record = components.repos.archive.read(record_id)
    except (NotFoundError, GoneError, RecordIntegrityError):
        return None
    return PatientIdentity(phone=record.wa_id, bsuid=record.bsuid)


def _purge_exports_holding(components: ArchiveDeps, entry: IndexEntry, now: datetime) -> list[str]:
    """Delete every live export zip that may hold the record (its date range includes the
    record's day; when it was built is not compared, as Meta's timestamps and our clock may
    disagree by seconds). Return their ids."""
    exports = components.repos.exports
    day = entry.submitted_at.astimezone(UTC).date()
    purged = []
    for export in exports.ready_before(now):
        covers = (export.date_from is None or export.date_from <= day) and (
            export.date_to is None or day <= export.date_to
        )
        if covers:
            exports.delete_zip(export.object_name)
            exports.mark_purged(export.export_id, now)
            purged.append(export.export_id)
    return purged


@dataclass(frozen=True)
class RebuildReport:
    objects: int
    restored: int


def rebuild_index(components: ArchiveDeps) -> RebuildReport:
    """Recreate index entries missing for archived objects (after a lost index)."""
    archive = components.repos.archive
    conversations = components.repos.conversations
    names = list(archive.object_names())

    def owned(record: IntakeRecord) -> bool:
        # An object whose conversation exists but does not list it was written by a
        # conditional commit that lost (it is discarded at once; this covers a crash before that).
        # With no conversation at all (everything was lost), the object is restored.
        identity = PatientIdentity(phone=record.wa_id, bsuid=record.bsuid)
        stored = conversations.raw(identity)
        return stored is None or record.record_id in stored.get("record_ids", [])

    def restore(name: str) -> IndexEntry | None:
        return archive.restore_index_entry(name, owned)

    with ThreadPoolExecutor(16, thread_name_prefix="rebuild") as pool:
        restored = sum(1 for entry in pool.map(restore, names) if entry)
    logger.info("index rebuilt", extra={"objects": len(names), "restored": restored})
    return RebuildReport(objects=len(names), restored=restored)


@dataclass(frozen=True)
class ReencryptReport:
    examined: int
    reencrypted: int
    primary_key_id: int


def reencrypt_records(components: ArchiveDeps, limit: int | None = None) -> ReencryptReport:
    """Re-encrypt active records still under an older key; resumable (progress is the index)."""
    archive = components.repos.archive
    primary = components.keys.keyring().primary_key_id
    stale = (
        entry
        for entry in archive.index_entries()
        if entry.status == IndexStatus.ACTIVE and entry.key_id != primary
    )
    examined = reencrypted = 0
    with ThreadPoolExecutor(8, thread_name_prefix="reencrypt") as pool:
        batch: list[IndexEntry] = []
        for entry in stale:
            if limit is not None and examined >= limit:
                break
            batch.append(entry)
            examined += 1
            if len(batch) == 64:
                reencrypted += sum(pool.map(archive.reencrypt, batch))
                batch = []
        reencrypted += sum(pool.map(archive.reencrypt, batch))
    return ReencryptReport(examined, reencrypted, primary)


def seal_days(
    components: ArchiveDeps, day: date | None = None, before: date | None = None
) -> list[SealReport]:
    """Seal `day`, or every complete UTC day before `before` (default: today) that has no
    current batch, so exports read each such day in a few large requests. Run daily."""
    archive = components.repos.archive
    days = [day] if day is not None else archive.days_to_seal(before or datetime.now(UTC).date())
    reports = []
    for each in days:
        report = archive.seal_day(each)
        reports.append(report)
        logger.info(
            "seal",
            extra={
                "day": each.isoformat(),
                "sealed": report.sealed,
                "records": report.records,
                "superseded": report.superseded,
            },
        )
    return reports
