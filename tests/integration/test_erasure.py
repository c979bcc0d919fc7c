"""Erasure leaves no copy behind: read the raw stores (Firestore, the bucket) afterwards."""

from __future__ import annotations

from datetime import UTC, date, datetime

from click.testing import CliRunner

from service.archive.records import seal_days
from service.shell.cli import cli
from tests.support.conversations import complete_form
from tests.support.stack import APP_SECRET
from tests.support.whatsapp import Patient, body_text

PHONE = "34612345678"


def object_names(components) -> list[str]:
    return [blob.name for blob in components.repos.bucket.list_blobs()]


def export(client, headers, **params) -> dict:
    response = client.get("/extractData", query_string=params, headers=headers)
    assert response.status_code == 200, response.json
    return response.json


def test_records_erase_removes_the_object_batches_export_zips_links_and_conversation_reference(
    client, fake_graph, components, provider_headers
):
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=PHONE)
    complete_form(patient)
    record_id = components.repos.conversations.raw(PHONE)["record_id"]
    today = datetime.now(UTC).date()
    seal_days(components, day=today)  # a batch copy of today's ciphertexts
    holding = export(client, provider_headers, format="csv")
    elsewhere = export(client, provider_headers, format="csv", to=date(2020, 1, 1).isoformat())
    names = object_names(components)
    assert any(record_id in name for name in names) and any("batches/" in n for n in names)

    result = CliRunner().invoke(cli, ["records", "erase", record_id], obj=components)

    assert result.exit_code == 0, result.output
    names = object_names(components)
    assert not any(record_id in name for name in names)
    assert not any(name.startswith("batches/") for name in names)
    assert not any(holding["export_id"] in name for name in names)
    assert any(elsewhere["export_id"] in name for name in names)  # could not hold it: kept
    assert client.get(holding["download_url"]).status_code == 410
    assert client.get(elsewhere["download_url"]).status_code == 200
    stored = components.repos.conversations.raw(PHONE)
    assert record_id not in stored["record_ids"] and stored["record_id"] is None
    (event,) = components.repos.audit.list(action="record.erase")
    removed = event.details["removed"]
    assert removed["exports"] == [holding["export_id"]] and removed["conversation"] is True


def test_a_patients_delete_my_data_clears_replies_still_queued(client, fake_graph, components):
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=PHONE)
    patient.starts_form()
    for answer in ("Maria Fernanda Lopez", "03/02/1980"):
        patient.says(answer)
    patient.presses("gender:female")
    patient.says("Calle Falsa 123, 28013 Madrid")
    patient.says("Type 2 diabetes")
    fake_graph.fail_next(3, status=503, code=2)
    assert patient.says("Metformin 500mg") == []  # the summary, repeating the answers, waits
    assert components.repos.conversations.raw(PHONE)["outbox_pending"] == 1
    patient.says("delete my data")
    replies = patient.presses("erase:yes")
    texts = [body_text(reply) for reply in replies]
    assert not any("Metformin" in text for text in texts)  # the summary never went
    stored = components.repos.conversations.raw(PHONE)
    assert stored["outbox_pending"] == 0 and "draft" not in stored
    assert not any("Metformin" in body_text(m["body"]) for m in fake_graph.messages_to(PHONE))


def test_a_patients_erasure_of_a_completed_record_purges_the_exports_holding_it(
    client, fake_graph, components, provider_headers
):
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=PHONE)
    complete_form(patient)
    record_id = components.repos.conversations.raw(PHONE)["record_id"]
    holding = export(client, provider_headers, format="xlsx")
    patient.says("delete my data")
    patient.presses("erase:yes")
    assert not any(record_id in name for name in object_names(components))
    assert client.get(holding["download_url"]).status_code == 410
    stored = components.repos.conversations.raw(PHONE)
    assert not stored.get("record_ids") and stored["status"] != "completed"
