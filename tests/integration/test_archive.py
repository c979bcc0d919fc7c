"""The encrypted archive against fake-gcs-server, the Firestore emulator and the fake KMS."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from repositories.archive import RecordIntegrityError, object_name_for
from service.archive.records import archive_record, erase_record, rebuild_index
from service.errors import ConflictError, GoneError, NotFoundError
from service.shell.cli import cli
from tests.support.records import PATIENT_ADDRESS, PATIENT_NAME, make_record, numbered_record


def _bucket_objects(components) -> dict[str, bytes]:
    return {blob.name: blob.download_as_bytes() for blob in components.repos.bucket.list_blobs()}


def test_an_archived_record_reads_back_exactly(components):
    record = make_record(address="Calle Falsa 123\n2º izquierda, Madrid")
    entry = archive_record(components, record)
    assert components.repos.archive.read(record.record_id) == record
    assert entry.object_name == f"intakes/2026/11/20/{record.record_id}.tink"


def test_the_index_entry_holds_no_patient_data(components):
    record = make_record()
    archive_record(components, record)
    document = components.repos.firestore.collection("intakes").document(record.record_id)
    fields = document.get().to_dict()
    assert set(fields) == {"submitted_at", "object", "key_id", "schema_version", "status",
                           "erased_at"}  # fmt: skip
    assert fields["status"] == "active"
    assert fields["key_id"] == components.keys.keyring().primary_key_id


def test_neither_bucket_nor_firestore_holds_a_name_or_address_in_plaintext(components):
    for index in range(5):
        archive_record(
            components, make_record(submitted_at=datetime(2026, 11, index + 1, tzinfo=UTC))
        )
    erase_record(components, archive_record(components, make_record()).record_id, actor="test")
    needles = [value.encode() for value in (PATIENT_NAME, PATIENT_ADDRESS, "Maria", "Madrid",
                                              "34612345678", "Metformin")]  # fmt: skip
    for name, data in _bucket_objects(components).items():
        for needle in needles:
            assert needle not in data, name
    for collection in components.repos.firestore.collections():
        for snapshot in collection.stream():
            text = json.dumps(snapshot.to_dict(), default=str).encode()
            for needle in needles:
                assert needle not in text, f"{collection.id}/{snapshot.id}"


def test_archiving_the_same_record_twice_gives_one_object_and_one_index_entry(components):
    record = make_record()
    first = archive_record(components, record)
    second = archive_record(components, record)
    assert first.object_name == second.object_name
    names = [name for name in _bucket_objects(components) if name.startswith("intakes/")]
    assert names == [first.object_name]
    assert len(list(components.repos.archive.index_entries())) == 1


def test_a_crash_between_object_and_index_is_repaired_by_the_retry(components):
    record = make_record()
    archive_record(components, record)
    # The crash: the object was written, the index write never happened.
    components.repos.firestore.collection("intakes").document(record.record_id).delete()
    assert components.repos.archive.index_entry(record.record_id) is None
    archive_record(components, record)
    assert components.repos.archive.read(record.record_id) == record
    assert len([n for n in _bucket_objects(components) if n.startswith("intakes/")]) == 1


def test_another_record_under_an_archived_id_is_refused_and_the_original_kept(components):
    record = make_record()
    archive_record(components, record)
    components.repos.firestore.collection("intakes").document(record.record_id).delete()
    impostor = make_record(record_id=record.record_id, name="Someone Else")
    with pytest.raises(ConflictError, match="already archived with other content"):
        archive_record(components, impostor)
    components.repos.archive.restore_index_entry(object_name_for(record.record_id,
                                                                 record.submitted_at))  # fmt: skip
    assert components.repos.archive.read(record.record_id).name == PATIENT_NAME


def test_an_invalid_record_is_refused_before_anything_is_written(components):
    with pytest.raises(Exception, match="date_of_birth"):
        archive_record(components, make_record(date_of_birth=datetime(2030, 1, 1).date()))
    assert [n for n in _bucket_objects(components) if n.startswith("intakes/")] == []


def test_a_flipped_byte_is_an_integrity_error_naming_the_record(components):
    record = make_record()
    entry = archive_record(components, record)
    blob = components.repos.bucket.blob(entry.object_name)
    data = bytearray(blob.download_as_bytes())
    data[len(data) // 2] ^= 0x01
    blob.upload_from_string(bytes(data))
    with pytest.raises(RecordIntegrityError, match=f"record {record.record_id} failed"):
        components.repos.archive.read(record.record_id)


def test_a_ciphertext_moved_to_another_record_fails_authentication(components):
    first, second = make_record(), make_record()
    first_entry = archive_record(components, first)
    second_entry = archive_record(components, second)
    stolen = components.repos.bucket.blob(first_entry.object_name).download_as_bytes()
    components.repos.bucket.blob(second_entry.object_name).upload_from_string(stolen)
    with pytest.raises(RecordIntegrityError, match="authentication failed"):
        components.repos.archive.read(second.record_id)


def test_a_record_under_an_unknown_key_is_an_integrity_error(components):
    record = make_record()
    entry = archive_record(components, record)
    blob = components.repos.bucket.blob(entry.object_name)
    data = bytearray(blob.download_as_bytes())
    data[1:5] = (0x7FFFFFFF).to_bytes(4, "big")
    blob.upload_from_string(bytes(data))
    with pytest.raises(RecordIntegrityError, match="unknown key"):
        components.repos.archive.read(record.record_id)


def test_integrity_failures_are_logged_with_the_record_id_and_a_count(components, caplog):
    record = make_record()
    entry = archive_record(components, record)
    components.repos.bucket.blob(entry.object_name).upload_from_string(b"\x01garbage-bytes")
    with pytest.raises(RecordIntegrityError):
        components.repos.archive.read(record.record_id)
    failures = [r for r in caplog.records if r.getMessage().startswith("archived record failed")]
    assert failures and failures[-1].record_id == record.record_id
    assert failures[-1].integrity_failures_total >= 1
    assert PATIENT_NAME not in caplog.text


def test_a_missing_object_is_an_integrity_error_not_an_empty_record(components):
    entry = archive_record(components, make_record())
    components.repos.bucket.blob(entry.object_name).delete()
    with pytest.raises(RecordIntegrityError, match="archived object is missing"):
        components.repos.archive.read(entry.record_id)


def test_an_unknown_record_is_not_found(components):
    with pytest.raises(NotFoundError):
        components.repos.archive.read("0123456789abcdef")
    with pytest.raises(NotFoundError):
        components.repos.archive.read("../../keys/intake-keyset")


def test_iter_records_yields_the_date_range_in_submitted_order(components):
    records = [numbered_record(index) for index in range(30)]
    for record in reversed(records):
        archive_record(components, record)
    start, end = records[5].submitted_at, records[20].submitted_at
    got = list(components.repos.archive.iter_records(start, end, window=4))
    assert [r.record_id for r in got] == [r.record_id for r in records[5:20]]
    assert list(components.repos.archive.iter_records()) == records


def test_iter_records_pages_past_the_first_page(components, monkeypatch):
    import repositories.archive.reads as archive_module

    monkeypatch.setattr(archive_module, "PAGE_SIZE", 7)
    records = [numbered_record(index) for index in range(23)]
    for record in records:
        archive_record(components, record)
    assert [r.record_id for r in components.repos.archive.iter_records()] == [
        r.record_id for r in records
    ]


def test_iter_records_stops_at_a_corrupt_record_instead_of_skipping_it(components):
    records = [numbered_record(index) for index in range(10)]
    entries = [archive_record(components, record) for record in records]
    components.repos.bucket.blob(entries[6].object_name).upload_from_string(b"\x01tampered!")
    seen = []
    with pytest.raises(RecordIntegrityError, match=records[6].record_id):
        for record in components.repos.archive.iter_records(window=2):
            seen.append(record.record_id)
    assert seen == [record.record_id for record in records[:6]]


def test_rotation_keeps_old_records_readable_and_new_ones_use_the_new_key(components):
    before = make_record()
    archive_record(components, before)
    old_primary = components.keys.keyring().primary_key_id
    keys = components.keys.rotate()
    new_primary = next(key.key_id for key in keys if key.primary)
    assert new_primary != old_primary and len(keys) == 2
    after = make_record()
    entry = archive_record(components, after)
    assert entry.key_id == new_primary
    assert components.repos.archive.read(before.record_id) == before
    assert components.repos.archive.read(after.record_id) == after


def test_another_process_reads_records_encrypted_after_a_rotation_elsewhere(components, config):
    from service.shell.components import build_components

    other = build_components(config)
    other.keys.keyring()  # loaded before the rotation below
    components.keys.rotate()
    record = make_record()
    archive_record(components, record)
    assert other.repos.archive.read(record.record_id) == record


def test_reencrypt_moves_old_records_to_the_primary_and_is_resumable(components):
    old = [archive_record(components, numbered_record(index)) for index in range(12)]
    components.keys.rotate()
    primary = components.keys.keyring().primary_key_id
    result = CliRunner().invoke(cli, ["keys", "reencrypt", "--limit", "5"], obj=components)
    assert result.exit_code == 0, result.output
    assert "reencrypted: 5" in result.output
    result = CliRunner().invoke(cli, ["keys", "reencrypt"], obj=components)
    assert "examined: 7  reencrypted: 7" in result.output
    for entry in old:
        stored = components.repos.archive.index_entry(entry.record_id)
        assert stored.key_id == primary
        data = components.repos.bucket.blob(entry.object_name).download_as_bytes()
        assert int.from_bytes(data[1:5], "big") == primary
        assert components.repos.archive.read(entry.record_id).record_id == entry.record_id
    again = CliRunner().invoke(cli, ["keys", "reencrypt"], obj=components)
    assert "examined: 0  reencrypted: 0" in again.output


def test_rebuilding_a_lost_index_restores_every_entry(components):
    records = [numbered_record(index) for index in range(8)]
    for record in records:
        archive_record(components, record)
    for snapshot in components.repos.firestore.collection("intakes").stream():
        snapshot.reference.delete()
    report = rebuild_index(components)
    assert (report.objects, report.restored) == (8, 8)
    assert list(components.repos.archive.iter_records()) == records
    assert rebuild_index(components).restored == 0


def test_the_rebuild_migration_runs_from_the_cli(components):
    record = make_record()
    archive_record(components, record)
    components.repos.firestore.collection("intakes").document(record.record_id).delete()
    result = CliRunner().invoke(cli, ["migrate"], obj=components)
    assert "0002_rebuild_intake_index" in result.output
    assert components.repos.archive.read(record.record_id) == record


def test_erasure_deletes_the_object_marks_the_index_and_is_audited(components):
    record = make_record()
    entry = archive_record(components, record)
    result = CliRunner().invoke(cli, ["records", "erase", record.record_id], obj=components)
    assert result.exit_code == 0, result.output
    assert not components.repos.bucket.blob(entry.object_name).exists()
    stored = components.repos.archive.index_entry(record.record_id)
    assert stored.status == "erased" and stored.key_id is None
    with pytest.raises(GoneError):
        components.repos.archive.read(record.record_id)
    assert list(components.repos.archive.iter_records()) == []
    events = components.repos.audit.list(action="record.erase")
    assert [(e.actor, e.details["record_id"]) for e in events] == [
        ("operator:cli", record.record_id)
    ]
    with pytest.raises(ConflictError, match="was erased"):
        archive_record(components, record)


def test_erasing_an_unknown_record_fails_with_one_line(components):
    result = CliRunner().invoke(cli, ["records", "erase", "0123456789abcdef"], obj=components)
    assert result.exit_code == 1
    assert result.output.strip() == "Error: record 0123456789abcdef not found"


def test_one_kms_call_serves_a_thousand_records(components, fake_kms):
    components.keys.forget()
    fake_kms.reset_calls()
    start = datetime(2026, 10, 1, tzinfo=UTC)
    records = [numbered_record(index, start) for index in range(1000)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda record: archive_record(components, record), records))
    assert (
        len(list(components.repos.archive.iter_records(start, start + timedelta(days=1)))) == 1000
    )
    assert fake_kms.calls == {"encrypt": 0, "decrypt": 1}


def test_a_record_erased_while_an_export_reads_is_left_out_not_an_integrity_error(
    components, monkeypatch
):
    records = [numbered_record(index) for index in range(5)]
    for record in records:
        archive_record(components, record)
    archive = components.repos.archive
    snapshot = list(archive.index_entries())  # the export has read the index...
    erase_record(components, records[2].record_id, actor="test")  # ...then an erase lands
    monkeypatch.setattr(archive, "index_entries", lambda start=None, end=None: iter(snapshot))
    got = [record.record_id for record in archive.iter_records()]
    assert got == [r.record_id for r in records if r is not records[2]]


def test_sixteen_parallel_fetches_reuse_pooled_connections(components, caplog):
    """With a pool smaller than the fetch threads, urllib3 opens and throws away a connection
    for every extra request ("Connection pool is full"): slower exports and seal runs."""
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: archive_record(components, numbered_record(i)), range(300)))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="urllib3"):
        assert len(list(components.repos.archive.iter_records())) == 300
    assert not [record for record in caplog.records if "pool is full" in record.getMessage()]
