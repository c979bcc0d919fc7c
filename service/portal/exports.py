"""The portal's exports: queue one as a job, follow its progress, list past ones with what
became of them, and hand out a download link to whoever may have it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from repositories.export_jobs import ExportJob, JobStatus
from repositories.exports import ExportEntry, ExportStatus
from repositories.providers import Provider, Role
from service.domain.passwords import export_password, today_utc
from service.errors import GoneError, NotFoundError
from service.exports.jobs import ExportJobRunner, look_after
from service.exports.links import sign_download_token
from service.exports.ports import ExportDeps
from service.exports.purge import PURGE_AFTER
from service.exports.registry import FILE_FORMATS

LIST_SIZE = 20
_LABELS = {file_format.format.value: file_format.label for file_format in FILE_FORMATS}


@dataclass(frozen=True)
class FormatChoice:
    value: str
    label: str
    description: str


@dataclass(frozen=True)
class ExportRow:
    """One export job as the page shows it (no patient data)."""

    job_id: str
    created_at: datetime
    format_label: str
    days: str
    status: str  # queued, running, ready, failed, expired
    done: int
    total: int | None
    records: int | None
    error: str | None
    available_until: datetime | None

    @property
    def downloadable(self) -> bool:
        return self.status == JobStatus.READY


@dataclass(frozen=True)
class TodaysPassword:
    password: str
    valid_for: date


def format_choices() -> list[FormatChoice]:
    """Every export format, as one list serves the API and the portal."""
    return [FormatChoice(f.names[0], f.label, f.description) for f in FILE_FORMATS]


def export_rows(deps: ExportDeps, runner: ExportJobRunner, who: Provider) -> list[ExportRow]:
    """The person's latest exports (everyone's for an administrator), newest first; a job
    whose process is gone is taken over on the way."""
    jobs = deps.repos.export_jobs.recent(None if who.role == Role.ADMIN else who.provider_id,
                                         LIST_SIZE)  # fmt: skip
    # The exports the ready jobs made, in one read rather than one per row.
    made = deps.repos.exports.get_many([job.export_id for job in jobs if job.export_id])
    for job in jobs:
        look_after(deps, runner, job)
    return [_row(job, made.get(job.export_id or "")) for job in jobs]


def job_progress(
    deps: ExportDeps, runner: ExportJobRunner, who: Provider, job_id: str
) -> ExportRow:
    """One job's state, for the page's progress bar; 404 for another person's job."""
    job = _visible_job(deps, who, job_id)
    look_after(deps, runner, job)
    return _row(job, _export_of(deps, job))


def download_link(deps: ExportDeps, who: Provider, job_id: str) -> str:
    """A fresh signed link to a ready job's zip (the same link /extractData hands out)."""
    job = _visible_job(deps, who, job_id)
    row = _row(job, _export_of(deps, job))
    if row.status == "expired":
        raise GoneError("this export was deleted after 24 hours; start a new one")
    if job.export_id is None or row.status != JobStatus.READY:
        raise NotFoundError("this export is not ready")
    token, _ = sign_download_token(
        deps.config.secret_key,
        job.export_id,
        job.provider_id,
        datetime.now(UTC),
        deps.config.export_link_ttl_seconds,
    )
    return f"/exports/{job.export_id}/download?token={token}"


def todays_password(deps: ExportDeps) -> TodaysPassword:
    daily = export_password(deps.config.zip_password, today_utc())
    return TodaysPassword(daily.password, daily.valid_for)


def _visible_job(deps: ExportDeps, who: Provider, job_id: str) -> ExportJob:
    job = deps.repos.export_jobs.get(job_id)
    if job is None or (who.role != Role.ADMIN and job.provider_id != who.provider_id):
        raise NotFoundError("no such export")
    return job


def _export_of(deps: ExportDeps, job: ExportJob) -> ExportEntry | None:
    return deps.repos.exports.get(job.export_id) if job.export_id else None


def _row(job: ExportJob, made: ExportEntry | None) -> ExportRow:
    """How a job shows; `made` is the export it produced (None when none exists)."""
    status: str = job.status
    available_until = None
    if job.status == JobStatus.READY and job.export_id is not None:
        available_until = job.finished_at + PURGE_AFTER if job.finished_at else None
        gone = made is None or made.status == ExportStatus.PURGED
        if gone or (available_until is not None and available_until < datetime.now(UTC)):
            status = "expired"
    return ExportRow(
        job_id=job.job_id,
        created_at=job.created_at,
        format_label=_LABELS.get(job.format, job.format),
        days=_days(job.date_from, job.date_to),
        status=status,
        done=job.done,
        total=job.total,
        records=job.records,
        error=job.error,
        available_until=available_until,
    )


def _days(first: date | None, last: date | None) -> str:
    if first is None and last is None:
        return "all days"
    if first == last:
        return f"{first}"
    return f"{first or 'the first'} to {last or 'today'}"
