"""The archive as the service uses it: objects, reads and seals, and erasure across them."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from google.cloud import firestore

from repositories.archive.model import (
    IndexEntry,
    IndexStatus,
    day_of,
)
from repositories.archive.seals import ArchiveSeals
from repositories.clients import translated
from service.errors import NotFoundError


class ArchiveRepository(ArchiveSeals):
    """Archive, read, stream, re-encrypt and erase encrypted intake records."""

    # -- maintenance ---------------------------------------------------------------------
    def erase(self, record_id: str, erased_at: datetime) -> IndexEntry:
        """Delete the record's object and mark its index entry erased (no PHI is kept)."""
        entry = self.index_entry(record_id)
        if entry is None:
            raise NotFoundError(f"record {record_id} not found")
        self._delete_quietly(entry.object_name)  # gone already after an interrupted erase
        fields = {"status": IndexStatus.ERASED, "erased_at": erased_at, "key_id": None}
        batch = self._client.batch()
        batch.update(self._index.document(record_id), fields)
        # The day's batch holds a copy of the record: unseal the day in the same write, then
        # delete every batch object of that day (a rerun of an interrupted erase does too).
        batch.set(*self._day_bump(entry.submitted_at, batch=firestore.DELETE_FIELD), merge=True)
        with translated("Firestore"):
            batch.commit()
        self._sweep_batches(day_of(entry.submitted_at), keep=None, everything=True)
        return replace(entry, status=IndexStatus.ERASED, erased_at=erased_at, key_id=None)
