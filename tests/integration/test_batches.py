"""Sealed daily batches: exports read closed days in a few requests, with every guarantee of
the per-record archive kept (order, integrity, erasure, records added late)."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta

import pytest
from google.cloud import firestore

from repositories.archive import ReadStats, RecordIntegrityError
from repositories.archive import reads as archive_module
from repositories.batches import FrameReader, FrameWriter
from service.archive.records import archive_record, erase_record, seal_days
from service.shell.cli import cli
from tests.support.records import numbered_record

DAY = date(2026, 3, 14)
START = datetime(2026, 3, 14, 23, 50, tzinfo=UTC)  # ten minutes before the next day


def _archive_days(components, count: int = 12) -> list:
    """`count` records a minute apart: 10 on DAY, the rest on the next day."""
    records = [numbered_record(index * 60, START) for index in range(count)]
    for record in records:
        archive_record(components, record)
    return sorted(records, key=lambda record: (record.submitted_at, record.record_id))


def _read(components, start=None, end=None) -> tuple[list, ReadStats]:
    stats = ReadStats()
    records = list(components.repos.archive.iter_records(start, end, stats=stats))
    return records, stats


def _batch_objects(components) -> list[str]:
    return [blob.name for blob in components.repos.bucket.list_blobs(prefix="batches/")]


def test_a_sealed_day_is_read_from_its_batch_with_the_same_records_in_the_same_order(
    components,
):
    records = _archive_days(components, 60)
    before, _ = _read(components)
    reports = seal_days(components, before=DAY + timedelta(days=2))
    assert [(report.day, report.records) for report in reports] == [
        (DAY, 10),
        (DAY + timedelta(days=1), 50),
    ]
    after, stats = _read(components)
    assert after == before == records
    assert (stats.from_batches, stats.one_by_one, stats.batches_used) == (60, 0, 2)
    # A range that covers only part of a day reads that part one by one.
    part, stats = _read(components, START - timedelta(minutes=5), None)
    assert part == [record for record in records if record.submitted_at >= part[0].submitted_at]
    assert (stats.from_batches, stats.one_by_one) == (50, 10)


def test_the_seal_job_seals_complete_days_only_and_is_idempotent(components, runner):
    archive_record(components, numbered_record(0, datetime.now(UTC)))
    _archive_days(components)
    result = runner.invoke(cli, ["records", "seal"])
    assert result.exit_code == 0, result.output
    assert "2026-03-14  sealed 10 records" in result.output
    assert "2026-03-15  sealed 2 records" in result.output
    assert "days examined: 2  sealed: 2" in result.output  # today is still open
    again = runner.invoke(cli, ["records", "seal"])
    assert "days examined: 0  sealed: 0" in again.output
    assert len(_batch_objects(components)) == 2


def test_a_record_archived_late_into_a_sealed_day_is_still_exported(components):
    records = _archive_days(components)
    seal_days(components, before=DAY + timedelta(days=2))
    late = numbered_record(7, datetime(2026, 3, 14, 12, tzinfo=UTC))
    archive_record(components, late)  # e.g. `records rebuild-index` restoring an entry
    read, stats = _read(components)
    assert late in read and len(read) == len(records) + 1
    assert stats.batches_used == 1  # the other day's batch is still current
    assert [report.day for report in seal_days(components, before=DAY + timedelta(days=2))] == [DAY]
    assert _read(components)[0] == read
    assert len(_batch_objects(components)) == 2  # the superseded batch is deleted


def test_a_conversation_completing_into_a_sealed_day_unseals_it(components):
    """The conversation path writes the index entry in its transaction: that bumps the day."""
    _archive_days(components)
    seal_days(components, day=DAY)
    late = numbered_record(99, datetime(2026, 3, 14, 8, tzinfo=UTC))
    entry = components.repos.archive.store_object(late)

    @firestore.transactional
    def complete(transaction) -> None:
        components.repos.archive.write_index_entry(transaction, entry)

    complete(components.repos.firestore.transaction())
    read, stats = _read(components)
    assert late in read
    assert stats.batches_used == 0


def test_erasing_a_record_deletes_every_batch_copy_and_the_export_leaves_it_out(components):
    records = _archive_days(components)
    seal_days(components, before=DAY + timedelta(days=2))
    gone = records[3]
    erase_record(components, gone.record_id, actor="test")
    remaining = [name for name in _batch_objects(components) if "/2026/03/14/" in name]
    assert remaining == []
    read, stats = _read(components)
    assert gone not in read and len(read) == len(records) - 1
    assert (stats.batches_used, stats.one_by_one) == (1, 9)
    seal_days(components, day=DAY)
    read_again, stats = _read(components)
    assert read_again == read and stats.batches_used == 2


def test_an_erase_while_a_day_is_being_sealed_refuses_the_seal(components):
    records = _archive_days(components)

    def erase_meanwhile() -> None:
        erase_record(components, records[0].record_id, actor="test")

    report = components.repos.archive.seal_day(DAY, on_written=erase_meanwhile)
    assert not report.sealed
    assert _batch_objects(components) == []  # the copy holding the erased record is deleted
    read, stats = _read(components)
    assert records[0] not in read and stats.batches_used == 0


def test_a_batch_deleted_while_an_export_reads_it_is_finished_record_by_record(
    components, monkeypatch
):
    records = _archive_days(components, 40)  # 10 on DAY, 30 on the next day
    seal_days(components, before=DAY + timedelta(days=2))
    monkeypatch.setattr(archive_module, "BATCH_READ_CHUNK", 1024)  # a ranged GET per frame or so
    stats = ReadStats()
    reading = components.repos.archive.iter_records(stats=stats)
    first = [next(reading) for _ in range(15)]  # into the second day's batch
    erase_record(components, records[30].record_id, actor="test")  # deletes that batch
    rest = list(reading)
    read = first + rest
    assert [record.record_id for record in read] == [
        record.record_id for record in records if record != records[30]
    ]
    assert stats.batch_fallbacks == 1 and stats.one_by_one > 0  # the rest, one by one
    assert stats.from_batches + stats.one_by_one == 39


def _tamper(components, change, seal_fields: bool = True) -> None:
    """Rewrite the day's batch object with `change` applied to its frames, and point the day's
    document at it: an attacker able to write both the bucket and Firestore (who also updates
    the seal's count and digest unless `seal_fields` is False)."""
    batch = components.repos.archive.current_batches()[0]
    blob = components.repos.bucket.blob(batch.object_name)
    frames = list(FrameReader(io.BytesIO(blob.download_as_bytes())))
    out = io.BytesIO()
    writer = FrameWriter(out)
    for record_id, ciphertext in change(frames):
        writer.add(record_id, ciphertext)
    blob.upload_from_string(out.getvalue())
    blob.reload()
    document = components.repos.firestore.collection("intake_days").document(DAY.isoformat())
    fields = {"batch.generation": blob.generation}
    if seal_fields:
        fields.update({"batch.sha256": writer.sha256, "batch.count": writer.count})
    document.update(fields)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda frames: [(frames[1][0], frames[0][1]), *frames[1:]],
            "authentication failed",
        ),
        (lambda frames: [*frames, frames[-1]], "out of order"),
        (lambda frames: frames[::-1], "out of order"),
        (
            lambda frames: [(frames[0][0], frames[0][1][:-1] + b"\x00"), *frames[1:]],
            "authentication failed",
        ),
    ],
    ids=["moved", "repeated", "reordered", "flipped"],
)
def test_a_tampered_batch_fails_loudly_naming_the_record(components, change, reason):
    _archive_days(components)
    seal_days(components, day=DAY)
    _tamper(components, change)
    with pytest.raises(RecordIntegrityError, match=reason):
        _read(components)


def test_a_batch_missing_a_whole_frame_does_not_match_its_seal(components):
    _archive_days(components)
    seal_days(components, day=DAY)
    _tamper(components, lambda frames: frames[:-1], seal_fields=False)
    with pytest.raises(RecordIntegrityError, match="does not match its day's seal"):
        _read(components)


def test_a_truncated_or_swapped_batch_object_is_never_read_as_the_days_records(components):
    records = _archive_days(components)
    seal_days(components, day=DAY)
    batch = components.repos.archive.current_batches()[0]
    blob = components.repos.bucket.blob(batch.object_name)
    blob.upload_from_string(blob.download_as_bytes()[:-40])  # a new generation
    read, stats = _read(components)
    assert read == records  # the sealed generation is gone: read one by one
    assert stats.batch_fallbacks == 1
    document = components.repos.firestore.collection("intake_days").document(DAY.isoformat())
    blob.reload()
    document.update({"batch.generation": blob.generation})
    with pytest.raises(RecordIntegrityError, match="ends in the middle of a frame"):
        _read(components)
