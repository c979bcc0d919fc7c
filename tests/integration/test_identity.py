"""Patients known by a business-scoped user id (BSUID), phone, or both; changes of either.

Everything goes through the signed webhook, the Firestore emulator and the fake Graph API, which
accepts `recipient` (a BSUID) like Meta's and refuses a message with neither `to` nor
`recipient`.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from devtools import payloads
from service.shell.cli import cli
from tests.support.conversations import complete_form
from tests.support.exports import csv_rows, export_and_fetch, xlsx_rows
from tests.support.stack import APP_SECRET
from tests.support.whatsapp import Patient, body_text, post_signed

PHONE = "34612345678"
NEW_PHONE = "34699887766"
BSUID = "ES.1410018717833190"
NEW_BSUID = "ES.2520029828944201"


def conversation_ids(components) -> list[str]:
    collection = components.repos.firestore.collection("conversations")
    return [snapshot.id for snapshot in collection.stream()]


def test_a_patient_known_only_by_a_bsuid_completes_the_intake_answered_by_recipient(
    client, fake_graph, components, config, provider_headers
):
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=None, bsuid=BSUID)
    replies = complete_form(patient)
    assert "reference" in body_text(replies[-1]).lower()
    sent = fake_graph.messages_to(None, BSUID)
    assert len(sent) >= 9
    assert all(m["body"].get("recipient") == BSUID and "to" not in m["body"] for m in sent)
    assert components.repos.conversations.raw(BSUID)["status"] == "completed"

    _, _, content = export_and_fetch(client, provider_headers, config, format="csv")
    (row,) = csv_rows(content)
    assert (row["phone"], row["whatsapp_user_id"]) == ("", BSUID)
    _, _, content = export_and_fetch(client, provider_headers, config, format="xlsx")
    (row,) = xlsx_rows(content)
    assert row["phone"] is None and row["whatsapp_user_id"] == BSUID


def test_a_patient_known_by_both_is_answered_by_phone_alone(client, fake_graph, components):
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=PHONE, bsuid=BSUID)
    patient.says("hello")
    (reply,) = fake_graph.messages_to(PHONE)
    assert reply["body"]["to"] == PHONE and "recipient" not in reply["body"]


def test_a_patient_whose_messages_start_carrying_a_bsuid_keeps_their_draft(
    client, fake_graph, components, config, provider_headers
):
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=PHONE)
    patient.starts_form()
    patient.says("Maria Fernanda Lopez")
    patient.bsuid = BSUID  # Meta's rollout: the same patient, now with a BSUID too
    replies = patient.says("03/02/1980")
    assert "gender" in body_text(replies[-1]).lower()  # the form went on: the draft was kept
    (key,) = conversation_ids(components)
    patient.wa_id = None  # and later the patient hides their number behind a username
    patient.presses("gender:female")
    for answer in ("Calle Falsa 123, 28013 Madrid", "none", "none"):
        patient.says(answer)
    patient.presses("summary:confirm")
    assert conversation_ids(components) == [key]
    assert components.repos.conversations.raw(BSUID)["status"] == "completed"
    assert components.repos.conversations.find(PHONE) == key
    _, _, content = export_and_fetch(client, provider_headers, config, format="csv")
    (row,) = csv_rows(content)  # one record, filed with both identifiers
    assert row["phone"] == f"'+{PHONE}" and row["whatsapp_user_id"] == BSUID


def test_a_changed_number_keeps_the_conversation_and_replies_follow_the_new_number(
    client, fake_graph, components
):
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=PHONE, bsuid=BSUID)
    patient.starts_form()
    patient.says("Maria Fernanda Lopez")
    change = payloads.system_value("user_changed_number", PHONE, BSUID, new_wa_id=NEW_PHONE)
    assert post_signed(client, APP_SECRET, payloads.envelope([change])).status_code == 200
    assert post_signed(client, APP_SECRET, payloads.envelope([change])).status_code == 200  # again
    patient.wa_id = NEW_PHONE
    patient.seen = 0
    replies = patient.says("03/02/1980")
    assert "gender" in body_text(replies[-1]).lower()
    assert len(conversation_ids(components)) == 1
    assert components.repos.conversations.find(NEW_PHONE) == conversation_ids(components)[0]


def test_a_changed_number_without_a_bsuid_links_the_new_number(client, fake_graph, components):
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=PHONE)
    patient.starts_form()
    change = payloads.system_value("user_changed_number", PHONE, None, new_wa_id=NEW_PHONE)
    assert post_signed(client, APP_SECRET, payloads.envelope([change])).status_code == 200
    patient.wa_id, patient.seen = NEW_PHONE, 0
    replies = patient.says("Maria Fernanda Lopez")
    assert "birth" in body_text(replies[-1]).lower()
    assert len(conversation_ids(components)) == 1


def test_a_changed_bsuid_keeps_the_conversation(client, fake_graph, components):
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=None, bsuid=BSUID)
    patient.starts_form()
    change = payloads.system_value("user_changed_user_id", None, BSUID, new_user_id=NEW_BSUID)
    assert post_signed(client, APP_SECRET, payloads.envelope([change])).status_code == 200
    patient.bsuid, patient.seen = NEW_BSUID, 0
    replies = patient.says("Maria Fernanda Lopez")
    assert "birth" in body_text(replies[-1]).lower()
    assert all(m["body"]["recipient"] == NEW_BSUID for m in fake_graph.messages_to(None, NEW_BSUID))
    assert len(conversation_ids(components)) == 1


def test_an_identity_change_for_an_unknown_patient_stores_nothing(client, components):
    change = payloads.system_value("user_changed_number", PHONE, BSUID, new_wa_id=NEW_PHONE)
    assert post_signed(client, APP_SECRET, payloads.envelope([change])).status_code == 200
    assert conversation_ids(components) == []
    assert list(components.repos.firestore.collection("identity_links").stream()) == []


def test_a_recycled_number_with_another_bsuid_does_not_reopen_the_previous_form(
    client, fake_graph, components
):
    first = Patient(client, fake_graph, APP_SECRET, wa_id=PHONE, bsuid=BSUID)
    first.starts_form()
    first.says("Maria Fernanda Lopez")
    newcomer = Patient(client, fake_graph, APP_SECRET, wa_id=PHONE, bsuid=NEW_BSUID)
    newcomer.seen = len(fake_graph.messages_to(PHONE))
    replies = newcomer.says("hello")
    assert "language" in body_text(replies[-1]).lower()  # a new form, not the first one's
    assert len(conversation_ids(components)) == 2
    assert components.repos.conversations.raw(BSUID)["step"] == "date_of_birth"


def test_an_invitation_by_phone_reaches_a_patient_who_wrote_with_a_bsuid_and_stopped(
    client, fake_graph, components, provider_headers
):
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=PHONE, bsuid=BSUID)
    patient.says("STOP")
    response = client.post("/startConversation", json={"to": f"+{PHONE}"}, headers=provider_headers)
    assert response.status_code == 409  # the promise made at STOP holds by phone too
    assert [m["body"]["type"] for m in fake_graph.messages_to(PHONE)] == ["text"]


def test_an_invited_patient_who_answers_with_phone_and_bsuid_continues_that_invitation(
    client, fake_graph, components, provider_headers
):
    client.post("/startConversation", json={"to": f"+{PHONE}"}, headers=provider_headers)
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=PHONE, bsuid=BSUID)
    patient.seen = 1
    patient.says("hello")
    (key,) = conversation_ids(components)
    assert components.repos.conversations.raw(BSUID)["invited_at"]
    assert components.repos.conversations.find(BSUID) == key


def test_a_username_patient_later_invited_by_phone_keeps_one_conversation(
    client, fake_graph, components, provider_headers
):
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=None, bsuid=BSUID)
    patient.starts_form()  # known only by BSUID: the clinic cannot tell it is this number
    client.post("/startConversation", json={"to": f"+{PHONE}"}, headers=provider_headers)
    assert len(conversation_ids(components)) == 2
    patient.wa_id = PHONE  # the patient now writes with their number showing
    patient.seen = len(fake_graph.messages_to(None, BSUID))
    replies = patient.says("Maria Fernanda Lopez")
    assert "birth" in body_text(replies[-1]).lower()
    (key,) = conversation_ids(components)  # the bare invitation was folded into the form
    assert components.repos.conversations.find(PHONE) == key
    assert components.repos.conversations.raw(PHONE)["invited_at"]


def test_a_failed_status_for_a_message_sent_to_a_bsuid_is_recorded(client, fake_graph, components):
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=None, bsuid=BSUID)
    patient.says("hello")
    value = payloads.status_value(None, "wamid.X", "failed", [{"code": 131026}], user_id=BSUID)
    assert post_signed(client, APP_SECRET, payloads.envelope([value])).status_code == 200
    assert components.repos.conversations.raw(BSUID)["failed_deliveries"] == 1


@pytest.mark.parametrize(
    "sender",
    [
        {},
        {"from": "not-a-number"},
        {"from_user_id": "not a bsuid"},
        {"from": PHONE, "from_user_id": "es.lowercase"},
    ],
)
def test_a_message_without_a_usable_sender_is_acknowledged_and_changes_nothing(
    client, components, sender
):
    message = {**sender, **payloads.text_message("hello")}
    payload = payloads.envelope([{"messages": [message]}])
    assert post_signed(client, APP_SECRET, payload).status_code == 200
    assert conversation_ids(components) == []


def test_support_staff_find_a_conversation_by_phone_or_bsuid(client, fake_graph, components):
    runner = CliRunner()
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=PHONE, bsuid=BSUID)
    patient.starts_form()
    (key,) = conversation_ids(components)
    for typed in ("+34 612 345 678", BSUID):
        result = runner.invoke(cli, ["conversations", "find", typed], obj=components)
        assert result.exit_code == 0, result.output
        assert f"conversation  {key}" in result.output and "step          name" in result.output
        assert PHONE not in result.output.replace("+34 612 345 678", "")
    unknown = runner.invoke(cli, ["conversations", "find", "+34 699 000 111"], obj=components)
    assert unknown.exit_code == 1 and "no conversation" in unknown.output
    malformed = runner.invoke(cli, ["conversations", "find", "Maria"], obj=components)
    assert malformed.exit_code == 1 and "phone number" in malformed.output
