"""Exports as jobs: asked for in the portal, built off the request, with their progress.

A job is a document (`export_jobs/{job_id}`, no patient data) and a lease: the process that
queued it builds it on a background thread (`ExportJobRunner`), writing how many records it
has written about once a second, so a 100k-record export never holds a request and the page
can show a progress bar. A job whose process died is taken over, from the start, by the next
process that looks at it once its lease has ended (the portal looks whenever it shows it).
The finished export is an ordinary one (`exports/{export_id}`): downloaded through a signed
link, with the day's password, audited and purged like those of `/extractData`.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from repositories.export_jobs import ExportJob, JobStatus
from repositories.exports import ExportFormat
from service.accounts.ratelimit import RequestOrigin
from service.exports.audit import audit_export_event
from service.exports.build import ExportFilters, build_export, filter_details, parse_request
from service.exports.ports import ExportDeps

logger = logging.getLogger(__name__)

# Renewed with every progress write (about once a second): a job whose process died is taken
# over this long after its last sign of life.
JOB_LEASE = timedelta(minutes=2)
PROGRESS_EVERY_SECONDS = 1.0
# A queued job nobody started within this long was queued on a process that is gone.
QUEUED_TOO_LONG = timedelta(seconds=30)


def queue_export_job(
    components: ExportDeps,
    runner: ExportJobRunner,
    provider_id: str,
    format_value: str | None,
    from_value: str | None = None,
    to_value: str | None = None,
    origin: RequestOrigin | None = None,
) -> ExportJob:
    """Check the request, record the job as queued and hand it to this process's runner.

    Raises InvalidInputError for a bad format or range, before anything is stored.
    """
    file_format, filters = parse_request(format_value, from_value, to_value)
    job = ExportJob(
        job_id=secrets.token_hex(16),
        provider_id=provider_id,
        format=file_format.value,
        date_from=filters.date_from,
        date_to=filters.date_to,
        created_at=datetime.now(UTC),
    )
    components.repos.export_jobs.create(job)
    details = {"job_id": job.job_id, **filter_details(file_format, filters)}
    audit_export_event(
        components, "export.job.queue", "success", provider_id, origin or RequestOrigin(), details
    )
    runner.submit(job.job_id)
    return job


def look_after(components: ExportDeps, runner: ExportJobRunner, job: ExportJob) -> None:
    """Take over a job whose process is gone: queued too long, or running past its lease."""
    now = datetime.now(UTC)
    stalled = (job.status == JobStatus.QUEUED and now - job.created_at > QUEUED_TOO_LONG) or (
        job.status == JobStatus.RUNNING
        and job.claimed_until is not None
        and job.claimed_until < now
    )
    if stalled:
        runner.submit(job.job_id)


def run_export_job(components: ExportDeps, job_id: str) -> ExportJob | None:
    """Build the job's export if this process can lease it; return the finished job."""
    jobs = components.repos.export_jobs
    job = jobs.claim(job_id, datetime.now(UTC), JOB_LEASE)
    if job is None:
        return None  # finished, or another process is building it
    filters = ExportFilters(job.date_from, job.date_to)
    details: dict[str, Any] = {"job_id": job.job_id, "format": job.format}
    try:
        total = components.repos.archive.count_indexed(filters.start, filters.end)
        jobs.progress(job_id, 0, total, datetime.now(UTC) + JOB_LEASE)
        file_format = ExportFormat(job.format)  # stored by queue_export_job, checked then
        export_id = secrets.token_hex(16)
        created = build_export(
            components,
            job.provider_id,
            export_id,
            file_format,
            filters,
            None,
            _Progress(components, job_id).report,
        )
    except Exception as error:  # recorded, audited and logged: a failed job is never silent
        jobs.finish(job_id, JobStatus.FAILED, datetime.now(UTC), error=_described(error))
        audit_export_event(
            components, "export.create", "failure", job.provider_id, RequestOrigin(), details, error
        )
        logger.error("export job failed", extra={**details, "error": type(error).__name__})
        return jobs.get(job_id)
    jobs.finish(
        job_id,
        JobStatus.READY,
        datetime.now(UTC),
        export_id=created.export_id,
        records=created.records,
    )
    details.update({"export_id": created.export_id, "records": created.records})
    audit_export_event(
        components, "export.create", "success", job.provider_id, RequestOrigin(), details
    )
    logger.info("export job finished", extra={**details, "seconds": created.seconds})
    return jobs.get(job_id)


class _Progress:
    """Write a running job's progress (and renew its lease) about once a second."""

    def __init__(self, components: ExportDeps, job_id: str) -> None:
        self._jobs = components.repos.export_jobs
        self._job_id = job_id
        self._last = time.monotonic()

    def report(self, done: int) -> None:
        if time.monotonic() - self._last < PROGRESS_EVERY_SECONDS:
            return
        self._last = time.monotonic()
        self._jobs.progress(self._job_id, done, None, datetime.now(UTC) + JOB_LEASE)


def _described(error: Exception) -> str:
    """What staff may read about a failure: the kind of error, never its text (which could
    quote a record)."""
    name = type(error).__name__
    if name in ("UnavailableError", "DependencyError"):
        return "storage unavailable, try again"
    return f"failed ({name})"


class ExportJobRunner:
    """Background threads that build this process's export jobs, one job per thread."""

    def __init__(self, components: ExportDeps, threads: int = 1) -> None:
        self._components = components
        self._threads = threads
        self._lock = threading.Condition()
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._pending = 0
        self._pid: int | None = None

    def submit(self, job_id: str) -> None:
        with self._lock:
            if self._pid != os.getpid():  # first use in this process (gunicorn forks)
                self._pid = os.getpid()
                self._queue = queue.SimpleQueue()
                self._pending = 0
                for number in range(self._threads):
                    name = f"export-job-{number}"
                    threading.Thread(target=self._run, name=name, daemon=True).start()
            self._pending += 1
            self._queue.put(job_id)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every submitted job was run (tests)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.1))
            return True

    def _run(self) -> None:
        while True:
            job_id = self._queue.get()
            try:
                run_export_job(self._components, job_id)
            except Exception as error:  # the store failed even to record the failure
                logger.error("export job not run", extra={"error": type(error).__name__})
            finally:
                with self._lock:
                    self._pending -= 1
                    self._lock.notify_all()
