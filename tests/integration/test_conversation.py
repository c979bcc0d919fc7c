"""Whole conversations through the signed webhook, the Firestore emulator and the fake Graph API."""

from __future__ import annotations

import json

import pytest

from service.domain.record import reference_code
from tests.support.conversations import complete_form
from tests.support.whatsapp import body_text, button_ids, row_ids


def test_a_patient_completes_the_form_in_english_and_the_record_is_archived(patient, components):
    replies = complete_form(patient)
    stored = components.repos.conversations.raw(patient.wa_id)
    assert stored["status"] == "completed"
    record = components.repos.archive.read(stored["record_id"])
    assert (record.name, record.date_of_birth.isoformat(), record.gender) == (
        "Maria Fernanda Lopez",
        "1980-02-03",
        "female",
    )
    assert record.medical_conditions == ("Type 2 diabetes", "hypertension")
    assert record.wa_id == patient.wa_id and record.language == "en"
    assert reference_code(record.record_id) in body_text(replies[-1])


def test_a_patient_completes_the_form_in_spanish(patient, components):
    replies = complete_form(patient, language="es")
    assert "Gracias" in body_text(replies[-1]) or "gracias" in body_text(replies[-1])
    stored = components.repos.conversations.raw(patient.wa_id)
    assert components.repos.archive.read(stored["record_id"]).language == "es"


def test_every_reply_is_sent_once_and_in_order(patient, fake_graph):
    complete_form(patient)
    bodies = [message["body"] for message in fake_graph.messages_to(patient.wa_id)]
    assert len(bodies) == len({json.dumps(body, sort_keys=True) for body in bodies})


def test_the_stored_conversation_holds_no_answer_in_plaintext(patient, components):
    patient.starts_form()
    patient.says("Maria Fernanda Lopez")
    patient.says("03/02/1980")
    patient.presses("gender:female")
    patient.says("Calle Falsa 123, 28013 Madrid")
    patient.says("Type 2 diabetes")
    raw = components.repos.conversations.raw(patient.wa_id)
    # Ciphertexts are bytes: shown as a placeholder, or random bytes could spell "1980".
    text = json.dumps(
        raw, default=lambda value: "<bytes>" if isinstance(value, bytes) else str(value)
    )
    for secret in ("Maria", "Lopez", "1980", "Calle Falsa", "Madrid", "diabetes", "Diabetes"):
        assert secret not in text
    # What support staff need is plain.
    assert raw["status"] == "in_progress" and raw["step"] == "current_medications"
    assert raw["language"] == "en" and raw["invalid_answers"] == 0
    assert "draft" in raw and isinstance(raw["draft"], bytes)
    assert raw["created_at"] <= raw["updated_at"]


@pytest.mark.parametrize(
    ("step_answers", "bad", "hint"),
    [
        ([], "A", "too short"),
        ([], "12345", "letters"),
        (["Maria Lopez"], "31/02/1980", "does not exist"),
        (["Maria Lopez"], "03/02/2999", "future"),
        (["Maria Lopez"], "03/02/1890", "over 120"),
        (["Maria Lopez"], "yesterday", "DD/MM/YYYY"),
        (["Maria Lopez"], "🎂🎂", "DD/MM/YYYY"),
        (["Maria Lopez", "3 Feb 1980"], "maybe", "Female, Male or Other"),
        (["Maria Lopez", "3 Feb 1980", "f"], "Casa", "too short"),
    ],
)
def test_a_bad_answer_gets_a_specific_reask_and_counts_for_support(
    patient, components, step_answers, bad, hint
):
    patient.starts_form()
    for answer in step_answers:
        patient.says(answer)
    before = components.repos.conversations.raw(patient.wa_id)
    replies = patient.says(bad)
    assert hint in body_text(replies[-1])
    after = components.repos.conversations.raw(patient.wa_id)
    assert after["step"] == before["step"]
    assert after["invalid_answers"] == before["invalid_answers"] + 1


def test_written_months_and_other_date_forms_are_accepted(patient, components):
    patient.starts_form()
    patient.says("Maria Lopez")
    patient.says("February 3, 1980")
    assert components.repos.conversations.raw(patient.wa_id)["step"] == "gender"


@pytest.mark.parametrize("kind", ["image", "audio", "location", "sticker"])
def test_media_mid_form_asks_for_text_and_does_not_move_the_form(patient, components, kind):
    patient.starts_form()
    message = {"id": f"wamid.media{kind}", "type": kind, kind: {"id": "1"}}
    replies = patient.sends(message)
    assert "text" in body_text(replies[-1]).lower()
    assert components.repos.conversations.raw(patient.wa_id)["step"] == "name"


def test_a_redelivered_message_changes_the_state_once_and_is_answered_once(patient, components):
    patient.starts_form()
    patient.says("Maria Lopez")
    state = components.repos.conversations.raw(patient.wa_id)
    assert patient.redelivers() == []
    again = components.repos.conversations.raw(patient.wa_id)
    assert (again["step"], again["invalid_answers"]) == (state["step"], state["invalid_answers"])


def test_a_redelivered_confirmation_archives_one_record(patient, components):
    complete_form(patient)
    assert patient.redelivers() == []
    entries = list(components.repos.archive.index_entries())
    assert len(entries) == 1


def test_back_returns_to_the_previous_question(patient, components):
    patient.starts_form()
    patient.says("Maria Lopez")
    patient.says("BACK")
    assert components.repos.conversations.raw(patient.wa_id)["step"] == "name"


def test_help_explains_and_changes_nothing(patient, components):
    patient.starts_form("es")
    replies = patient.says("Ayuda")
    text = " ".join(body_text(reply) for reply in replies)
    assert "atrás" in text and "reiniciar" in text
    assert components.repos.conversations.raw(patient.wa_id)["step"] == "name"


def test_restart_clears_the_answers(patient, components):
    patient.starts_form()
    patient.says("Maria Lopez")
    patient.says("restart")
    stored = components.repos.conversations.get(patient.wa_id)
    assert stored.draft.get("answers", {}).get("name") is None


def test_stop_deletes_the_draft_and_nothing_more_is_sent(patient, components, fake_graph):
    patient.starts_form()
    patient.says("Maria Lopez")
    replies = patient.says("stop")
    assert len(replies) == 1
    raw = components.repos.conversations.raw(patient.wa_id)
    assert raw["status"] == "opted_out" and "draft" not in raw and raw["outbox_pending"] == 0
    from service.conversation.outbox import flush_all_outboxes

    flush_all_outboxes(components)
    assert patient.new_replies() == []


def test_consent_no_ends_politely_and_stores_nothing(patient, components):
    patient.says("hello")
    patient.presses("language:en")
    replies = patient.presses("consent:no")
    assert "not kept" in body_text(replies[-1])
    raw = components.repos.conversations.raw(patient.wa_id)
    assert raw["status"] == "opted_out" and "draft" not in raw
    assert list(components.repos.archive.index_entries()) == []


def test_delete_my_data_erases_the_archived_record_after_confirmation(patient, components):
    complete_form(patient)
    record_id = components.repos.conversations.raw(patient.wa_id)["record_id"]
    confirm = patient.says("delete my data")
    assert button_ids(confirm[-1])
    assert components.repos.archive.index_entry(record_id).status == "active"
    patient.presses(button_ids(confirm[-1])[0])
    assert components.repos.archive.index_entry(record_id).status == "erased"
    events = components.repos.audit.list(action="record.erase")
    assert [(event.actor, event.details["record_id"]) for event in events] == [
        ("patient", record_id)
    ]


def test_edit_from_the_summary_changes_one_answer_and_returns(patient, components):
    patient.starts_form()
    for answer in ("Maria Lopez", "03/02/1980", "f", "Calle Falsa 123, Madrid", "none", "none"):
        patient.says(answer)
    edit = patient.presses("summary:edit")
    assert "edit:address" in row_ids(edit[-1]) or any("address" in r for r in row_ids(edit[-1]))
    address_row = next(r for r in row_ids(edit[-1]) if "address" in r)
    patient.picks(address_row)
    summary = patient.says("Avenida Siempre Viva 742, Springfield")
    assert "Avenida Siempre Viva 742" in body_text(summary[-1])
    assert button_ids(summary[-1])[0] == "summary:confirm"
    patient.presses("summary:confirm")
    record_id = components.repos.conversations.raw(patient.wa_id)["record_id"]
    assert components.repos.archive.read(record_id).address.startswith("Avenida")


def test_writing_after_completion_says_the_form_is_in(patient):
    complete_form(patient)
    replies = patient.says("hi again")
    assert "already" in body_text(replies[-1])


def test_a_stop_racing_a_confirm_leaves_no_unowned_record(patient, components, monkeypatch):
    """The older transaction (STOP) wins; the Confirm attempt that lost leaves nothing behind."""
    import threading
    from datetime import UTC, datetime

    import service.conversation.inbound as conversation
    from service.domain.identity import PatientIdentity
    from service.domain.turns import Inbound
    from service.whatsapp.webhook import InboundMessage

    patient.starts_form()
    for answer in ("Maria Lopez", "03/02/1980", "f", "Calle Falsa 123, Madrid", "none", "none"):
        patient.says(answer)
    stop_has_read, confirm_stored = threading.Event(), threading.Event()
    real_state, real_effect = conversation.state_from_stored, conversation._apply_effect
    reads = []

    def state_from_stored(stored):  # hold the STOP transaction after its read
        if threading.current_thread().name == "stopper":
            reads.append(1)
            if len(reads) == 1:
                stop_has_read.set()
                confirm_stored.wait(10)
        return real_state(stored)

    def apply_effect(components, wa_id, effect):
        entry = real_effect(components, wa_id, effect)
        if effect.kind == "archive":
            confirm_stored.set()
        return entry

    monkeypatch.setattr(conversation, "state_from_stored", state_from_stored)
    monkeypatch.setattr(conversation, "_apply_effect", apply_effect)
    stop = InboundMessage("wamid.STOPRACE", PatientIdentity(phone=patient.wa_id),
                          datetime.now(UTC), Inbound(kind="text", text="stop"), "text")  # fmt: skip
    stopper = threading.Thread(
        name="stopper", target=conversation.handle_message, args=(components, stop)
    )
    stopper.start()
    stop_has_read.wait(10)
    patient.presses("summary:confirm")
    stopper.join(30)
    raw = components.repos.conversations.raw(patient.wa_id)
    assert "wamid.STOPRACE" in raw["processed_ids"]  # the STOP was applied, not lost
    indexed = [entry for entry in components.repos.archive.index_entries()]
    objects = list(components.repos.archive.object_names())
    # Either order of commits is fine; what must hold is that a record exists exactly when
    # the committed conversation owns it.
    assert [entry.record_id for entry in indexed] == raw["record_ids"]
    assert len(objects) == len(raw["record_ids"]) <= 1
