"""The webhook's HTTP contract: handshake, signature, aliases, every payload shape, statuses."""

from __future__ import annotations

import pytest

from blueprints.messaging import WEBHOOK_PATHS
from devtools import payloads
from service.whatsapp.webhook import sign
from tests.support.stack import APP_SECRET
from tests.support.whatsapp import Patient, post_signed

WA_ID = "34612345678"


@pytest.mark.parametrize("path", ["/getIncomingMessages", "/webhook", "/getIncomingMessage"])
def test_the_handshake_echoes_the_challenge_for_the_right_token(client, path):
    response = client.get(
        path,
        query_string={
            "hub.mode": "subscribe",
            "hub.verify_token": "dev-verify-token",
            "hub.challenge": "1158201444",
        },
    )
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "1158201444"


@pytest.mark.parametrize(
    "query",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": "dev-verify-token", "hub.challenge": "1"},
        {},
    ],
)
def test_the_handshake_refuses_anything_else_with_403(client, query):
    assert client.get("/getIncomingMessages", query_string=query).status_code == 403


def _text_payload(body: str = "hola") -> dict:
    return payloads.envelope([payloads.message_value(WA_ID, payloads.text_message(body))])


@pytest.mark.parametrize("path", WEBHOOK_PATHS)
@pytest.mark.parametrize(
    "signature",
    [None, "", "sha256=", "sha256=" + "0" * 64, "sha1=abc", "sha256=" + "g" * 64],
)
def test_a_missing_or_bad_signature_gets_401_and_changes_nothing(
    client, components, fake_graph, signature, path
):
    raw = payloads.encode(_text_payload())
    headers = {"X-Hub-Signature-256": signature} if signature is not None else {}
    response = client.post(path, data=raw, content_type="application/json", headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"
    assert components.repos.conversations.raw(WA_ID) is None
    assert fake_graph.messages == []


@pytest.mark.parametrize("path", WEBHOOK_PATHS)
def test_a_signature_over_other_bytes_is_refused(client, components, fake_graph, path):
    raw = payloads.encode(_text_payload())
    response = client.post(
        path,
        data=raw + b" ",
        content_type="application/json",
        headers={"X-Hub-Signature-256": sign(APP_SECRET, raw)},
    )
    assert response.status_code == 401
    assert components.repos.conversations.raw(WA_ID) is None
    assert fake_graph.messages == []


def test_the_refusal_tests_cover_every_path_that_receives_deliveries(app):
    """A new webhook alias must be added to WEBHOOK_PATHS, or the tests above miss it."""
    receiving = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("messaging.receive")
    }
    assert (
        receiving
        == set(WEBHOOK_PATHS)
        == {"/getIncomingMessages", "/getIncomingMessage", "/webhook"}
    )


@pytest.mark.parametrize("path", ["/getIncomingMessages", "/webhook", "/getIncomingMessage"])
def test_a_signed_message_on_every_alias_is_accepted_and_answered(client, fake_graph, path):
    fake_graph.customer_wrote(WA_ID)
    response = post_signed(client, APP_SECRET, _text_payload(), path=path)
    assert response.status_code == 200
    assert len(fake_graph.messages_to(WA_ID)) >= 1


NON_TEXT = {
    "image": {"image": {"id": "1", "mime_type": "image/jpeg", "sha256": "x"}},
    "audio": {"audio": {"id": "1", "mime_type": "audio/ogg", "voice": True}},
    "video": {"video": {"id": "1", "mime_type": "video/mp4"}},
    "document": {"document": {"id": "1", "filename": "lab.pdf", "mime_type": "application/pdf"}},
    "sticker": {"sticker": {"id": "1", "animated": False, "mime_type": "image/webp"}},
    "location": {"location": {"latitude": 40.4, "longitude": -3.7, "name": "Home"}},
    "contacts": {"contacts": [{"name": {"formatted_name": "A"}, "phones": [{"phone": "+1"}]}]},
    "reaction": {"reaction": {"message_id": "wamid.X", "emoji": "👍"}},
    "unsupported": {"errors": [{"code": 131051, "title": "Message type unknown"}]},
    "order": {"order": {"catalog_id": "1", "product_items": []}},
    "system": {"system": {"body": "changed number"}},
}


@pytest.mark.parametrize("kind", sorted(NON_TEXT))
def test_every_message_type_gets_200(client, fake_graph, kind):
    fake_graph.customer_wrote(WA_ID)
    message = {
        "id": payloads.new_message_id(),
        "timestamp": "1764000000",
        "type": kind,
        **NON_TEXT[kind],
    }
    response = post_signed(
        client, APP_SECRET, payloads.envelope([payloads.message_value(WA_ID, message)])
    )
    assert response.status_code == 200


@pytest.mark.parametrize("status", ["sent", "delivered", "read", "failed"])
def test_status_updates_get_200(client, status):
    value = payloads.status_value(
        WA_ID,
        "wamid.ABC",
        status,
        errors=[{"code": 131026, "title": "Undeliverable"}] if status == "failed" else None,
    )
    assert post_signed(client, APP_SECRET, payloads.envelope([value])).status_code == 200


def _patient_wrote(client, fake_graph) -> None:
    fake_graph.customer_wrote(WA_ID)
    assert post_signed(client, APP_SECRET, _text_payload()).status_code == 200


def test_a_failed_delivery_is_visible_to_support_staff(client, components, fake_graph):
    _patient_wrote(client, fake_graph)
    value = payloads.status_value(
        WA_ID, "wamid.ABC", "failed", errors=[{"code": 131026, "title": "Undeliverable"}]
    )
    post_signed(client, APP_SECRET, payloads.envelope([value]))
    stored = components.repos.conversations.raw(WA_ID)
    assert stored["failed_deliveries"] == 1
    assert stored["last_error"]["code"] == 131026


def test_top_level_errors_entries_get_200(client):
    value = {"errors": [{"code": 131000, "title": "Something went wrong"}]}
    assert post_signed(client, APP_SECRET, payloads.envelope([value])).status_code == 200


def test_a_batch_of_entries_changes_and_messages_is_processed_whole(client, fake_graph, components):
    patients = ["34600000001", "34600000002", "34600000003"]
    for wa_id in patients:
        fake_graph.customer_wrote(wa_id)
    values = [payloads.message_value(wa_id, payloads.text_message("hola")) for wa_id in patients]
    payload = payloads.envelope(values[:2])
    payload["entry"].append(payloads.envelope(values[2:])["entry"][0])
    payload["entry"][0]["changes"][0]["value"]["statuses"] = payloads.status_value(
        patients[0], "wamid.Z", "read"
    )["statuses"]
    assert post_signed(client, APP_SECRET, payload).status_code == 200
    for wa_id in patients:
        assert components.repos.conversations.raw(wa_id)["status"] != "new"
        assert fake_graph.messages_to(wa_id)


@pytest.mark.parametrize(
    "raw",
    [
        b"{}",
        b"[]",
        b"null",
        b'{"entry": "x"}',
        b'{"entry": [{"changes": [{"value": 1}]}]}',
        b'{"entry": [{"changes": [{"value": {"messages": [{"id": 5}]}}]}]}',
    ],
)
def test_well_signed_but_odd_json_gets_200_and_changes_nothing(client, components, raw):
    assert post_signed(client, APP_SECRET, raw).status_code == 200
    assert list(components.repos.firestore.collection("conversations").stream()) == []


def test_a_signed_body_that_is_not_json_gets_400(client):
    assert post_signed(client, APP_SECRET, b"\xff\xfe not json").status_code == 400


def test_a_body_over_meta_limit_gets_413(client):
    raw = b"{" + b" " * (3 * 1024 * 1024 + 10) + b"}"
    response = client.post(
        "/webhook",
        data=raw,
        content_type="application/json",
        headers={"X-Hub-Signature-256": sign(APP_SECRET, raw)},
    )
    assert response.status_code == 413


def test_a_failed_status_for_an_unknown_patient_creates_no_conversation(client, components):
    value = payloads.status_value(WA_ID, "wamid.ABC", "failed", errors=[{"code": 131026}])
    assert post_signed(client, APP_SECRET, payloads.envelope([value])).status_code == 200
    assert list(components.repos.firestore.collection("conversations").stream()) == []


def test_a_failed_status_with_an_absurd_error_code_still_gets_200(client, components, fake_graph):
    _patient_wrote(client, fake_graph)
    value = payloads.status_value(WA_ID, "wamid.ABC", "failed", errors=[{"code": 2**63}])
    assert post_signed(client, APP_SECRET, payloads.envelope([value])).status_code == 200
    assert components.repos.conversations.raw(WA_ID)["failed_deliveries"] == 1


def test_a_seven_digit_number_can_complete_the_form(client, fake_graph, components):
    patient = Patient(client, fake_graph, APP_SECRET, wa_id="6831234")  # Niue numbers have 7 digits
    patient.starts_form()
    for answer in ("Maria Lopez", "03/02/1980", "f", "Main Road, Alofi", "none", "none"):
        patient.says(answer)
    patient.presses("summary:confirm")
    assert components.repos.conversations.raw("6831234")["status"] == "completed"


def test_messages_for_another_phone_number_are_acknowledged_and_ignored(
    client, fake_graph, components
):
    fake_graph.customer_wrote(WA_ID)
    value = payloads.message_value(WA_ID, payloads.text_message("hola"))
    payload = payloads.envelope([value], phone_number_id="999999999999999")
    for _ in range(3):
        assert post_signed(client, APP_SECRET, payload).status_code == 200
    assert components.repos.conversations.keys() == []
    assert fake_graph.messages == []


@pytest.mark.parametrize("field", ["account_update", "message_template_status_update", 5])
def test_changes_of_another_webhook_field_are_acknowledged_and_ignored(
    client, fake_graph, components, field
):
    fake_graph.customer_wrote(WA_ID)
    payload = _text_payload()
    payload["entry"][0]["changes"][0]["field"] = field
    assert post_signed(client, APP_SECRET, payload).status_code == 200
    assert components.repos.conversations.keys() == []
    assert fake_graph.messages == []


def test_messages_for_our_number_in_the_same_delivery_are_still_processed(
    client, fake_graph, components
):
    fake_graph.customer_wrote(WA_ID)
    ours = payloads.envelope([payloads.message_value(WA_ID, payloads.text_message("hola"))])
    other = payloads.envelope(
        [payloads.message_value("34600000009", payloads.text_message("hola"))],
        phone_number_id="999999999999999",
    )
    ours["entry"].append(other["entry"][0])
    assert post_signed(client, APP_SECRET, ours).status_code == 200
    assert len(components.repos.conversations.keys()) == 1
    assert components.repos.conversations.raw(WA_ID) is not None
