"""Sealing a complete day into one batch object, and sweeping batches no day names."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from google.cloud import firestore

from repositories.archive.model import (
    _BATCH_WRITE_CHUNK,
    STRAY_BATCH_AGE,
    IndexStatus,
    SealReport,
    current_batch,
    day_start,
    in_order,
)
from repositories.archive.reads import ArchiveReads
from repositories.batches import (
    FrameWriter,
    SealedBatch,
    batch_prefix,
    day_id,
)
from repositories.clients import (
    STORAGE_CALL,
    STORAGE_ERRORS,
    translated,
)
from service.keys.crypto import key_id_of

logger = logging.getLogger(__name__)


class ArchiveSeals(ArchiveReads):
    """Seal complete days into batch objects so exports read a day in a few requests."""

    # -- sealing -------------------------------------------------------------------------
    def days_to_seal(self, before: date) -> list[date]:
        """Days before `before` with index changes and no current batch, oldest first."""
        query = self._days.where(filter=firestore.FieldFilter("day", "<", day_id(before)))
        with translated("Firestore"):
            snapshots = list(query.order_by("day").stream())
        primary = self.keys.keyring().primary_key_id
        days = []
        for snapshot in snapshots:
            fields = snapshot.to_dict() or {}
            batch = current_batch(fields)
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
        current = current_batch(fields)
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
            if entry.status == IndexStatus.ACTIVE
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
                pairs = in_order(
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

    def _record_batch(self, reference: firestore.DocumentReference, batch: SealedBatch) -> bool:
        @firestore.transactional
        def record(transaction: firestore.Transaction) -> bool:
            snapshot = reference.get(transaction=transaction)
            fields = snapshot.to_dict() or {}
            if int(fields.get("version", 0)) != batch.version:
                return False
            transaction.set(
                reference, {"day": day_id(batch.day), "batch": batch.to_fields()}, merge=True
            )
            return True

        with translated("Firestore"):
            return record(self._client.transaction())

    def _sweep_batches(self, day: date, keep: str | None, everything: bool = False) -> int:
        """Delete the day's batch objects other than `keep`: all of them for an erase (no copy
        of the record may survive), else only strays older than a seal could take."""
        deleted = 0
        now = datetime.now(UTC)
        with translated("Cloud Storage", STORAGE_ERRORS):
            for blob in self._bucket.list_blobs(prefix=batch_prefix(day), **STORAGE_CALL):
                if blob.name == keep:
                    continue
                if everything or now - (blob.time_created or now) >= STRAY_BATCH_AGE:
                    self._delete_quietly(blob.name)
                    deleted += 1
        return deleted
