"""Export zips and their records: `exports/{export_id}` documents and `exports/{export_id}.zip`.

The document says who asked, when, with which filters, how many records and under which day's
password; it never holds patient data. The zip is AES-encrypted before it reaches the bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

from google.api_core import exceptions as google_exceptions
from google.cloud import firestore, storage

from repositories.clients import (
    FIRESTORE_CALL,
    STORAGE_CALL,
    STORAGE_ERRORS,
    STORAGE_UPLOAD_CALL,
    translated,
)
from service.errors import ConflictError

COLLECTION = "exports"
OBJECT_PREFIX = "exports/"
_READ_CHUNK = 1024 * 1024
UPLOAD_CHUNK = 8 * 1024 * 1024  # a multiple of 256 KiB, as resumable uploads require


class ExportStatus(StrEnum):
    """An export's `status`: its zip is stored, or purged (deleted, its links answer 410)."""

    READY = "ready"
    PURGED = "purged"


class ExportFormat(StrEnum):
    """The files inside an export zip; stored by value in the export's `format` field."""

    CSV = "csv"
    XLSX = "xlsx"
    FHIR = "fhir"  # FHIR R4 NDJSON per resource type and the Questionnaire


@dataclass(frozen=True)
class ExportEntry:
    export_id: str
    provider_id: str
    created_at: datetime
    format: ExportFormat
    date_from: date | None
    date_to: date | None
    records: int
    password_date: date
    object_name: str
    size_bytes: int
    link_expires_at: datetime
    status: ExportStatus = ExportStatus.READY
    purged_at: datetime | None = None


@dataclass(frozen=True)
class ZipStream:
    size: int
    chunks: Iterator[bytes]


def object_name_for(export_id: str) -> str:
    return f"{OBJECT_PREFIX}{export_id}.zip"


class ExportRepository:
    """Store, read, stream and purge export zips and their documents."""

    def __init__(self, client: firestore.Client, bucket: storage.Bucket) -> None:
        self._client = client
        self._collection = client.collection(COLLECTION)
        self._bucket = bucket

    def store_zip(self, export_id: str, path: Path) -> tuple[str, int]:
        """Upload a finished zip (never over an existing object); return its name and size."""
        object_name = object_name_for(export_id)
        # Past 8 MB the client uploads in resumable chunks, each read into memory whole: its
        # default chunk is 100 MB, so a large (FHIR) zip would cost up to 100 MB of memory.
        blob = self._bucket.blob(object_name, chunk_size=UPLOAD_CHUNK)
        with translated("Cloud Storage", STORAGE_ERRORS):
            try:
                blob.upload_from_filename(
                    str(path),
                    content_type="application/zip",
                    if_generation_match=0,
                    **STORAGE_UPLOAD_CALL,
                )
            except google_exceptions.PreconditionFailed:
                raise ConflictError(f"export {export_id} already exists") from None
        return object_name, path.stat().st_size

    def create(self, entry: ExportEntry) -> None:
        with translated("Firestore"):
            try:
                self._collection.document(entry.export_id).create(_fields(entry), **FIRESTORE_CALL)
            except google_exceptions.AlreadyExists:
                raise ConflictError(f"export {entry.export_id} already exists") from None

    def get(self, export_id: str) -> ExportEntry | None:
        with translated("Firestore"):
            snapshot = self._collection.document(export_id).get(**FIRESTORE_CALL)
        return _entry(snapshot.id, snapshot.to_dict() or {}) if snapshot.exists else None

    def get_many(self, export_ids: list[str]) -> dict[str, ExportEntry]:
        """Return the exports that exist among these ids, read in one request."""
        if not export_ids:
            return {}
        references = [self._collection.document(export_id) for export_id in export_ids]
        with translated("Firestore"):
            snapshots = list(self._client.get_all(references, **FIRESTORE_CALL))
        return {s.id: _entry(s.id, s.to_dict() or {}) for s in snapshots if s.exists}

    def open_zip(self, object_name: str) -> ZipStream | None:
        """Return the stored zip as a stream of chunks, or None when it is gone."""
        with translated("Cloud Storage", STORAGE_ERRORS):
            blob = self._bucket.get_blob(object_name, **STORAGE_CALL)
        if blob is None:
            return None
        # The reader fetches one chunk per ranged GET, pinned to the generation just read.
        reader = blob.open("rb", chunk_size=_READ_CHUNK)
        return ZipStream(size=blob.size or 0, chunks=_chunks(reader))

    def ready_before(self, cutoff: datetime) -> Iterator[ExportEntry]:
        """Yield the exports still holding a zip that were created before cutoff."""
        # One equality filter (single-field index) and the time compared here: a range on
        # another field would need a composite index in production Firestore.
        query = self._collection.where(
            filter=firestore.FieldFilter("status", "==", ExportStatus.READY)
        )
        with translated("Firestore"):
            snapshots = list(query.stream())
        for snapshot in snapshots:
            entry = _entry(snapshot.id, snapshot.to_dict() or {})
            if entry.created_at < cutoff:
                yield entry

    def mark_purged(self, export_id: str, purged_at: datetime) -> None:
        with translated("Firestore"):
            self._collection.document(export_id).update(
                {"status": ExportStatus.PURGED, "purged_at": purged_at}
            )

    def delete_zip(self, object_name: str) -> bool:
        """Delete a zip; return False when it was already gone."""
        with translated("Cloud Storage", STORAGE_ERRORS):
            try:
                self._bucket.blob(object_name).delete()
            except google_exceptions.NotFound:
                return False
        return True

    def zip_objects_before(self, cutoff: datetime) -> Iterator[tuple[str, str]]:
        """Yield (object name, export id) of every export zip written before cutoff."""
        with translated("Cloud Storage", STORAGE_ERRORS):
            blobs = list(self._bucket.list_blobs(prefix=OBJECT_PREFIX))
        for blob in blobs:
            if blob.time_created is not None and blob.time_created < cutoff:
                yield blob.name, blob.name.removeprefix(OBJECT_PREFIX).removesuffix(".zip")


def _chunks(reader: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := reader.read(_READ_CHUNK):
            yield chunk
    finally:
        reader.close()


def _fields(entry: ExportEntry) -> dict[str, object]:
    return {
        "provider_id": entry.provider_id,
        "created_at": entry.created_at,
        "format": entry.format,
        "filters": {
            "from": entry.date_from.isoformat() if entry.date_from else None,
            "to": entry.date_to.isoformat() if entry.date_to else None,
        },
        "records": entry.records,
        "password_date": entry.password_date.isoformat(),
        "object": entry.object_name,
        "size_bytes": entry.size_bytes,
        "link_expires_at": entry.link_expires_at,
        "status": entry.status,
        "purged_at": entry.purged_at,
    }


def _entry(export_id: str, data: dict[str, Any]) -> ExportEntry:
    filters = data.get("filters") or {}
    return ExportEntry(
        export_id=export_id,
        provider_id=data["provider_id"],
        created_at=data["created_at"],
        format=data["format"],
        date_from=date.fromisoformat(filters["from"]) if filters.get("from") else None,
        date_to=date.fromisoformat(filters["to"]) if filters.get("to") else None,
        records=data["records"],
        password_date=date.fromisoformat(data["password_date"]),
        object_name=data["object"],
        size_bytes=data["size_bytes"],
        link_expires_at=data["link_expires_at"],
        status=data.get("status", ExportStatus.READY),
        purged_at=data.get("purged_at"),
    )
