"""Dependencies failing under the webhook: it answers 5xx so Meta retries, and the
redelivery completes the conversation with nothing lost or answered twice."""

from __future__ import annotations

import time

import pytest

from service.devstack import LocalStack
from tests.integration.servers import eventually_ready
from tests.integration.whatsapp import Patient

SECRET = "dev-app-secret"


@pytest.fixture
def patient(client, fake_graph) -> Patient:
    return Patient(client, fake_graph, SECRET)


def _post_expecting_failure(patient: Patient, message: dict) -> int:
    from service import payloads
    from tests.integration.whatsapp import post_signed

    patient.sent.append(message)
    envelope = payloads.envelope([payloads.message_value(patient.wa_id, message)])
    return post_signed(patient.client, patient.secret, envelope).status_code


def test_firestore_down_gets_5xx_and_the_redelivery_completes_the_step(
    patient, client, components, stack: LocalStack
):
    from service import payloads

    patient.starts_form()
    message = payloads.text_message("Maria Lopez", timestamp=patient._timestamp())
    stack.firestore.stop()
    try:
        started = time.monotonic()
        assert _post_expecting_failure(patient, message) == 503
        assert time.monotonic() - started < 30
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json["checks"]["firestore"] != "ok"
    finally:
        stack.firestore.start()
    assert eventually_ready(client)
    # The emulator came back empty (it keeps data in memory): that is the harshest case, a
    # lost state; the point here is the answer codes and that nothing is answered twice.
    replies = patient.redelivers()
    assert len(replies) >= 1
    assert patient.redelivers() == []


def test_storage_down_at_confirm_never_marks_the_form_completed(
    patient, client, components, stack: LocalStack, initial_keyset
):
    for answer in ("hello",):
        patient.says(answer)
    patient.presses("language:en")
    patient.presses("consent:yes")
    for answer in ("Maria Lopez", "03/02/1980", "f", "Calle Falsa 123, Madrid", "none", "none"):
        patient.says(answer)
    from service import payloads

    confirm = payloads.button_reply("summary:confirm", "Confirm", timestamp=patient._timestamp())
    stack.gcs.stop()
    try:
        assert _post_expecting_failure(patient, confirm) == 503
        stored = components.repos.conversations.raw(patient.wa_id)
        assert stored["status"] != "completed" and stored["step"] == "summary"
    finally:
        stack.gcs.start()
        components.repos.ensure_bucket()
        keyset = components.repos.bucket.blob(components.config.tink_keyset)
        keyset.upload_from_string(initial_keyset, content_type="application/json")
    replies = patient.redelivers()
    stored = components.repos.conversations.raw(patient.wa_id)
    assert stored["status"] == "completed"
    assert components.repos.archive.read(stored["record_id"]).name == "Maria Lopez"
    assert len(replies) == 1
