"""Exports as jobs: queued, built off the request with their progress, then downloaded like
any export; a job whose process died is taken over; a failure is recorded without patient
data."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from service.accounts import providers as provider_service
from service.archive.records import archive_record
from service.errors import InvalidInputError
from service.exports import jobs as export_jobs
from service.exports.links import sign_download_token
from tests.support.exports import download, todays_password, unzip, xlsx_rows
from tests.support.records import PATIENT_NAME, make_record, numbered_record


@pytest.fixture
def account(components) -> str:
    return provider_service.create_provider(
        components.repos.providers, "Front desk"
    ).provider.provider_id


def test_a_queued_excel_job_runs_off_the_request_and_its_export_downloads(
    client, components, account
):
    archive_record(components, make_record())
    for index in range(30):
        archive_record(components, numbered_record(index))
    job = export_jobs.queue_export_job(components, components.export_runner, account, "xlsx")
    assert job.status == "queued" and job.done == 0
    assert components.export_runner.wait_idle(60)
    done = components.repos.export_jobs.get(job.job_id)
    assert (done.status, done.records, done.done, done.total) == ("ready", 31, 31, 31)
    assert done.finished_at is not None and done.error is None
    token, _ = sign_download_token(
        components.config.secret_key, done.export_id, account, datetime.now(UTC), 900
    )
    reply, data = download(client, f"/exports/{done.export_id}/download?token={token}")
    assert reply.status_code == 200
    name, content = unzip(data, todays_password(components.config))
    assert name == "intakes.xlsx"
    rows = xlsx_rows(content)
    assert len(rows) == 31 and PATIENT_NAME in {row["name"] for row in rows}
    actions = [(event.action, event.outcome) for event in components.repos.audit.list()]
    assert ("export.job.queue", "success") in actions and ("export.create", "success") in actions


def test_a_bad_request_is_refused_before_any_job_is_stored(components, account):
    with pytest.raises(InvalidInputError):
        export_jobs.queue_export_job(components, components.export_runner, account, "pdf")
    with pytest.raises(InvalidInputError):
        export_jobs.queue_export_job(
            components, components.export_runner, account, "csv", "2026-12-02", "2026-12-01"
        )
    assert components.repos.export_jobs.recent() == []


def test_a_job_whose_process_died_is_taken_over_once_its_lease_ended(components, account):
    archive_record(components, make_record())
    job = export_jobs.queue_export_job(components, components.export_runner, account, "csv")
    assert components.export_runner.wait_idle(60)
    jobs = components.repos.export_jobs
    # Another job, leased by a process that died a while ago.
    stalled = export_jobs.ExportJob(
        job_id="f" * 32,
        provider_id=account,
        format="csv",
        date_from=None,
        date_to=None,
        created_at=datetime.now(UTC) - timedelta(minutes=5),
        status=export_jobs.JobStatus.RUNNING,
        claimed_until=datetime.now(UTC) - timedelta(seconds=1),
        attempts=1,
    )
    jobs.create(stalled)
    held = replace(stalled, job_id="e" * 32, claimed_until=datetime.now(UTC) + timedelta(minutes=1))
    jobs.create(held)
    for each in (jobs.get(stalled.job_id), jobs.get(held.job_id)):
        export_jobs.look_after(components, components.export_runner, each)
    assert components.export_runner.wait_idle(60)
    taken_over = jobs.get(stalled.job_id)
    assert (taken_over.status, taken_over.records, taken_over.attempts) == ("ready", 1, 2)
    assert jobs.get(held.job_id).status == "running"  # its process may still be building it
    assert jobs.get(job.job_id).status == "ready"


def test_a_failed_job_says_so_without_patient_data(components, account, stack, initial_keyset):
    archive_record(components, make_record())
    stack.gcs.stop()
    try:
        job = export_jobs.queue_export_job(components, components.export_runner, account, "csv")
        assert components.export_runner.wait_idle(90)
    finally:
        stack.gcs.start()
        components.repos.ensure_bucket()
        keyset = components.repos.bucket.blob(components.config.tink_keyset)
        keyset.upload_from_string(initial_keyset, content_type="application/json")
    failed = components.repos.export_jobs.get(job.job_id)
    assert failed.status == "failed" and failed.export_id is None
    assert failed.error == "storage unavailable, try again"
    assert PATIENT_NAME not in str(failed)
