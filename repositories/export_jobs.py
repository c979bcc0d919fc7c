"""Export jobs: `export_jobs/{job_id}`, an export asked for in the portal and built off the
request, with its progress. No patient data: who asked, the format and days, counts, times,
the export it produced or the kind of error that stopped it.

A job is leased to the process building it (`claimed_until`, renewed with each progress
write); a job whose process died is taken over once its lease has ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from google.api_core import exceptions as google_exceptions
from google.cloud import firestore

from repositories.clients import FIRESTORE_CALL, translated
from service.errors import ConflictError

COLLECTION = "export_jobs"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"


FINISHED = (JobStatus.READY, JobStatus.FAILED)


@dataclass(frozen=True)
class ExportJob:
    job_id: str
    provider_id: str
    format: str
    date_from: date | None
    date_to: date | None
    created_at: datetime
    status: JobStatus = JobStatus.QUEUED
    done: int = 0  # records written so far
    total: int | None = None  # records in the range when the job started (an estimate)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    export_id: str | None = None
    records: int | None = None
    error: str | None = None  # what stopped it, for staff: never patient data
    attempts: int = 0
    claimed_until: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class ExportJobRepository:
    """Create, lease, update and list export jobs."""

    def __init__(self, client: firestore.Client) -> None:
        self._client = client
        self._collection = client.collection(COLLECTION)

    def create(self, job: ExportJob) -> None:
        with translated("Firestore"):
            try:
                self._collection.document(job.job_id).create(_fields(job), **FIRESTORE_CALL)
            except google_exceptions.AlreadyExists:
                raise ConflictError(f"export job {job.job_id} already exists") from None

    def get(self, job_id: str) -> ExportJob | None:
        with translated("Firestore"):
            snapshot = self._collection.document(job_id).get(**FIRESTORE_CALL)
        return _job(snapshot.id, snapshot.to_dict() or {}) if snapshot.exists else None

    def claim(self, job_id: str, now: datetime, lease: timedelta) -> ExportJob | None:
        """Lease a queued job, or a running one whose lease ended, to the caller; None when
        it is finished or someone else holds it."""

        def change(job: ExportJob) -> ExportJob | None:
            if job.finished:
                return None
            if job.status == JobStatus.RUNNING and job.claimed_until and job.claimed_until > now:
                return None
            return replace(
                job,
                status=JobStatus.RUNNING,
                started_at=job.started_at or now,
                claimed_until=now + lease,
                attempts=job.attempts + 1,
                done=0,
            )

        return self._conditional(job_id, change)

    def progress(self, job_id: str, done: int, total: int | None, lease_until: datetime) -> None:
        """Record how far a running job got, and renew its lease."""
        fields: dict[str, Any] = {"done": done, "claimed_until": lease_until}
        if total is not None:
            fields["total"] = total
        with translated("Firestore"):
            self._collection.document(job_id).update(fields, **FIRESTORE_CALL)

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        now: datetime,
        export_id: str | None = None,
        records: int | None = None,
        error: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "status": status,
            "finished_at": now,
            "claimed_until": None,
            "export_id": export_id,
            "records": records,
            "error": error,
        }
        if records is not None:
            fields["done"] = records
        with translated("Firestore"):
            self._collection.document(job_id).update(fields, **FIRESTORE_CALL)

    def recent(self, provider_id: str | None = None, limit: int = 20) -> list[ExportJob]:
        """The newest jobs, of one account or of everyone (needs the composite index on
        provider_id + created_at that docs/operations.md creates)."""
        query: Any = self._collection
        if provider_id is not None:
            query = query.where(filter=firestore.FieldFilter("provider_id", "==", provider_id))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING).limit(limit)
        with translated("Firestore"):
            return [_job(snapshot.id, snapshot.to_dict() or {}) for snapshot in query.stream()]

    def _conditional(
        self, job_id: str, change: Callable[[ExportJob], ExportJob | None]
    ) -> ExportJob | None:
        reference = self._collection.document(job_id)
        for _ in range(5):
            with translated("Firestore"):
                snapshot = reference.get(**FIRESTORE_CALL)
                if not snapshot.exists:
                    return None
                changed = change(_job(snapshot.id, snapshot.to_dict() or {}))
                if changed is None:
                    return None
                unchanged = self._client.write_option(last_update_time=snapshot.update_time)
                try:
                    reference.update(_fields(changed), option=unchanged, **FIRESTORE_CALL)
                except (google_exceptions.FailedPrecondition, google_exceptions.Aborted):
                    continue  # another process changed it first: look again
            return changed
        return None


def _fields(job: ExportJob) -> dict[str, Any]:
    return {
        "provider_id": job.provider_id,
        "format": job.format,
        "date_from": job.date_from.isoformat() if job.date_from else None,
        "date_to": job.date_to.isoformat() if job.date_to else None,
        "created_at": job.created_at,
        "status": job.status,
        "done": job.done,
        "total": job.total,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "export_id": job.export_id,
        "records": job.records,
        "error": job.error,
        "attempts": job.attempts,
        "claimed_until": job.claimed_until,
    }


def _job(job_id: str, data: dict[str, Any]) -> ExportJob:
    return ExportJob(
        job_id=job_id,
        provider_id=data["provider_id"],
        format=data["format"],
        date_from=date.fromisoformat(data["date_from"]) if data.get("date_from") else None,
        date_to=date.fromisoformat(data["date_to"]) if data.get("date_to") else None,
        created_at=data["created_at"],
        status=JobStatus(data.get("status", JobStatus.QUEUED)),
        done=data.get("done", 0),
        total=data.get("total"),
        started_at=data.get("started_at"),
        finished_at=data.get("finished_at"),
        export_id=data.get("export_id"),
        records=data.get("records"),
        error=data.get("error"),
        attempts=data.get("attempts", 0),
        claimed_until=data.get("claimed_until"),
    )
