"""Sending replies: the outbox keeps what the Graph API did not take, and sends it once."""

from __future__ import annotations

import pytest

from service.accounts.providers import Role, create_provider
from tests.support.stack import APP_SECRET
from tests.support.whatsapp import Patient, body_text


@pytest.fixture
def scheduler_headers(components) -> dict[str, str]:
    """What the Cloud Scheduler job sends: a token of a scheduler account."""
    token = create_provider(components.repos.providers, "Cloud Scheduler", Role.SCHEDULER).token
    return {"Authorization": f"Bearer {token}"}


def test_a_reply_the_graph_api_failed_stays_queued_and_goes_with_the_next_message(
    patient, fake_graph, components
):
    patient.says("hello")
    fake_graph.fail_next(3, status=500, code=2)  # every in-request attempt fails
    assert patient.presses("language:en") == []
    stored = components.repos.conversations.raw(patient.wa_id)
    assert stored["outbox_pending"] == 1 and stored["last_error"]["code"] == 2
    replies = patient.presses("consent:yes")
    assert "agree" in body_text(replies[0]).lower()  # the consent question, queued earlier
    assert len(replies) == 2  # the queued consent question, then the name question
    assert "name" in body_text(replies[1]).lower()
    assert components.repos.conversations.raw(patient.wa_id)["outbox_pending"] == 0


def test_the_flush_task_drains_the_outbox_once_the_graph_api_recovers(
    patient, fake_graph, components, client, scheduler_headers
):
    patient.says("hello")
    fake_graph.fail_next(3, status=503, code=1)
    patient.presses("language:es")
    assert patient.new_replies() == []
    response = client.post("/tasks/flush-outbox", headers=scheduler_headers)
    assert response.status_code == 200 and response.json["sent"] == 1
    assert len(patient.new_replies()) == 1
    again = client.post("/tasks/flush-outbox", headers=scheduler_headers)
    assert again.json["sent"] == 0
    assert patient.new_replies() == []


def test_the_flush_task_needs_a_provider_token(client):
    assert client.post("/tasks/flush-outbox").status_code == 401


def test_throttling_with_retry_after_is_retried_within_the_request(patient, fake_graph):
    patient.says("hello")
    fake_graph.fail_next(1, status=429, code=130429, retry_after=1)
    replies = patient.presses("language:en")
    assert len(replies) == 1


def test_a_long_retry_after_leaves_the_reply_queued_instead_of_holding_the_webhook(
    patient, fake_graph, components
):
    patient.says("hello")
    fake_graph.fail_next(1, status=429, code=130429, retry_after=60)
    assert patient.presses("language:en") == []
    assert components.repos.conversations.raw(patient.wa_id)["outbox_pending"] == 1


def test_outside_the_24_hour_window_the_start_template_invites_the_patient_back(
    patient, fake_graph, components, client, scheduler_headers
):
    patient.says("hello")
    fake_graph.fail_next(3, status=500, code=2)
    patient.presses("language:en")
    fake_graph.customer_wrote(patient.wa_id, at=0)  # the window closed long ago
    client.post("/tasks/flush-outbox", headers=scheduler_headers)
    sent = patient.new_replies()
    assert [reply["type"] for reply in sent] == ["template"]
    assert sent[0]["template"]["name"] == components.config.whatsapp_start_template
    stored = components.repos.conversations.raw(patient.wa_id)
    assert stored["outbox_pending"] == 0 and stored["last_error"]["code"] == 131047


def test_an_expired_token_makes_readiness_fail_until_a_send_succeeds(
    patient, fake_graph, client, components
):
    patient.says("hello")
    fake_graph.expire_token()
    patient.presses("language:en")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "190" in response.json["checks"]["graph"]
    fake_graph.reset()
    patient.graph.customer_wrote(patient.wa_id)
    patient.presses("consent:yes")
    assert client.get("/readyz").status_code == 200


def test_start_conversation_sends_the_template_and_records_the_invitation(
    client, fake_graph, components, provider_headers
):
    response = client.post(
        "/startConversation", json={"to": "+34 612 34 56 78"}, headers=provider_headers
    )
    assert response.status_code == 202
    sent = fake_graph.messages_to("34612345678")
    assert [message["body"]["type"] for message in sent] == ["template"]
    stored = components.repos.conversations.raw("34612345678")
    assert stored["status"] == "invited" and stored["invited_at"]


def test_start_conversation_accepts_the_seed_target_audience_key(
    client, fake_graph, provider_headers
):
    response = client.post(
        "/startConversation", json={"target_audience": "447911123456"}, headers=provider_headers
    )
    assert response.status_code == 202
    assert fake_graph.messages_to("447911123456")


@pytest.mark.parametrize(
    "body", [{"to": "12"}, {"to": "+999 123"}, {"to": 5}, {}, ["x"], {"to": "not a phone"}]
)
def test_start_conversation_refuses_malformed_numbers(
    client, fake_graph, provider_headers, components, body
):
    response = client.post("/startConversation", json=body, headers=provider_headers)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_input"
    assert fake_graph.messages == []
    assert list(components.repos.firestore.collection("conversations").stream()) == []


def test_start_conversation_needs_a_provider_token(client, fake_graph):
    assert client.post("/startConversation", json={"to": "+34612345678"}).status_code == 401
    assert fake_graph.messages == []


def test_an_invited_patient_who_writes_starts_the_form(
    client, fake_graph, components, provider_headers, patient
):
    client.post("/startConversation", json={"to": "+34612345678"}, headers=provider_headers)
    patient.new_replies()
    replies = patient.says("Hola")
    assert "language" in body_text(replies[-1]).lower() or "idioma" in body_text(replies[-1])


def test_a_redelivery_sends_replies_left_queued_by_a_process_that_died(
    patient, fake_graph, components
):
    from datetime import UTC, datetime, timedelta

    patient.says("hello")
    fake_graph.fail_next(3, status=500, code=2)
    patient.presses("language:en")
    # As if the process died after its commit: the reply is queued, its lease long expired.
    raw = components.repos.conversations.raw(patient.wa_id)
    outbox = [
        {**item, "claimed_until": datetime.now(UTC) - timedelta(minutes=5)}
        for item in raw["outbox"]
    ]
    key = components.repos.conversations.find(patient.wa_id)
    components.repos.firestore.collection("conversations").document(key).update({"outbox": outbox})
    replies = patient.redelivers()
    assert len(replies) == 1 and "agree" in body_text(replies[0]).lower()
    assert components.repos.conversations.raw(patient.wa_id)["outbox_pending"] == 0
    assert patient.redelivers() == []


def test_a_patient_who_said_stop_is_not_invited_again(client, fake_graph, patient,
                                                      provider_headers):  # fmt: skip
    patient.says("hello")
    patient.says("stop")
    before = len(fake_graph.messages)
    response = client.post("/startConversation", json={"to": f"+{patient.wa_id}"},
                           headers=provider_headers)  # fmt: skip
    assert response.status_code == 409
    assert len(fake_graph.messages) == before


def _flush_until_drained(client, headers, components, wa_ids: list[str]) -> int:
    """Call the flush task (as Cloud Scheduler would) until nothing is queued; return sends."""
    sent = 0
    for _ in range(10):
        pending = [components.repos.conversations.raw(wa_id)["outbox_pending"] for wa_id in wa_ids]
        if not any(pending):
            return sent
        response = client.post("/tasks/flush-outbox", headers=headers)
        assert response.status_code == 200
        sent += response.json["sent"]
    raise AssertionError("the outbox did not drain in 10 flushes")


def test_a_burst_of_mixed_graph_failures_across_patients_drains_with_every_reply_once(
    client, fake_graph, components, scheduler_headers
):
    patients = [Patient(client, fake_graph, APP_SECRET, wa_id=f"3461200000{n}") for n in range(4)]
    for patient in patients:
        patient.says("hello")
    # Meta in trouble: 5xx, throttling with a Retry-After too long to wait in a request,
    # temporary errors; answered to whichever sends come next, in this order.
    fake_graph.fail_next(4, status=500, code=131000)
    fake_graph.fail_next(3, status=429, code=130429, retry_after=60)
    fake_graph.fail_next(4, status=503, code=2)
    fake_graph.fail_next(2, status=400, code=131056)  # pair rate limit
    for patient in patients:
        patient.presses("language:en")
    wa_ids = [patient.wa_id for patient in patients]
    assert any(components.repos.conversations.raw(wa_id)["outbox_pending"] for wa_id in wa_ids)
    _flush_until_drained(client, scheduler_headers, components, wa_ids)
    assert client.post("/tasks/flush-outbox", headers=scheduler_headers).json["sent"] == 0
    for patient in patients:
        patient.presses("consent:yes")
    for patient in patients:
        texts = [body_text(sent["body"]) for sent in fake_graph.messages_to(patient.wa_id)]
        # Language question, consent question, name question: each exactly once, in order.
        assert len(texts) == 3, texts
        assert "agree" in texts[1].lower() and "name" in texts[2].lower()
        stored = components.repos.conversations.raw(patient.wa_id)
        assert stored["outbox_pending"] == 0
        keys = [sent["key"] for sent in stored["sent"]]
        assert len(keys) == len(set(keys)) == 3


def test_a_send_that_times_out_after_meta_took_it_is_delivered_at_least_once(
    patient, fake_graph, components, client, scheduler_headers, monkeypatch
):
    """The "did it send?" case. Meta's send endpoint has no idempotency key: when the answer
    does not come back in time, only a retry can make sure the patient gets the reply, and if
    Meta had taken the first attempt the patient sees it twice. So such a send is not retried
    within the request (no burst of copies); the outbox retries it once later: at least once,
    never lost, and once an attempt is acknowledged (wamid), nothing sends it again."""
    from service.whatsapp import graph as whatsapp

    monkeypatch.setattr(whatsapp, "_READ_TIMEOUT", 0.5)  # the real one is 10 s
    patient.says("hello")
    fake_graph.delay_next(1, 1.5)  # Meta takes the message but answers after the client gave up
    replies = patient.presses("language:en")
    assert len(replies) == 1  # what Meta took; nothing more was sent within the request
    assert components.repos.conversations.raw(patient.wa_id)["outbox_pending"] == 1
    _flush_until_drained(client, scheduler_headers, components, [patient.wa_id])
    again = patient.new_replies()
    assert again == replies  # the one honest duplicate: we could not know Meta had it
    assert client.post("/tasks/flush-outbox", headers=scheduler_headers).json["sent"] == 0
    patient.redelivers()
    assert patient.new_replies() == []
    # A burst of timeouts: one copy per attempt Meta took, the reply still goes, then nothing.
    fake_graph.delay_next(3, 1.5)
    replies = patient.presses("consent:yes")
    assert len(replies) == 1
    _flush_until_drained(client, scheduler_headers, components, [patient.wa_id])
    replies += patient.new_replies()
    assert len(replies) == 4  # the three unanswered attempts and the acknowledged one
    assert client.post("/tasks/flush-outbox", headers=scheduler_headers).json["sent"] == 0
    assert all("name" in body_text(reply).lower() for reply in replies + patient.new_replies())


def test_fifteen_minutes_of_graph_outage_loses_no_reply_that_could_still_be_delivered(
    patient, fake_graph, components
):
    """Cloud Scheduler flushes once a minute: 15 failing flushes are 15 minutes of outage.
    A reply is never given up for how often it failed, only once Meta could not deliver it."""
    from service.conversation.outbox import flush_all_outboxes

    patient.says("hello")
    fake_graph.fail_next(3, status=503, code=2)  # the send inside the webhook request fails
    assert patient.presses("language:en") == []
    for _minute in range(15):
        fake_graph.fail_next(3, status=503, code=2)  # every attempt of that flush fails too
        assert flush_all_outboxes(components).failed == 1
    stored = components.repos.conversations.raw(patient.wa_id)
    assert stored["outbox_pending"] == 1 and not stored.get("dropped_replies")
    assert stored["outbox"][0]["attempts"] == 16  # sends tried, not times it was claimed
    assert flush_all_outboxes(components).sent == 1  # Meta is back
    (reply,) = patient.new_replies()
    assert "agree" in body_text(reply).lower()


def test_a_reply_whose_window_closed_during_an_outage_is_dropped_counted_and_logged(
    patient, fake_graph, components, caplog
):
    from datetime import UTC, datetime, timedelta

    from service.conversation.outbox import flush_all_outboxes

    patient.says("hello")
    fake_graph.fail_next(3, status=503, code=2)
    patient.presses("language:en")
    key = components.repos.conversations.find(patient.wa_id)
    long_ago = datetime.now(UTC) - timedelta(hours=25)  # the patient wrote 25 hours ago
    components.repos.firestore.collection("conversations").document(key).update(
        {"last_inbound_at": long_ago}
    )
    fake_graph.fail_next(3, status=503, code=2)
    flush_all_outboxes(components)
    stored = components.repos.conversations.raw(patient.wa_id)
    assert stored["outbox_pending"] == 0
    assert stored["dropped_replies"] == 1 and stored["last_drop"]["reason"] == "window_closed"
    drops = [r for r in caplog.records if r.getMessage() == "reply dropped"]
    assert [r.reason for r in drops] == ["window_closed"]


def test_the_outbox_is_bounded_while_nothing_can_be_sent(patient, fake_graph, components):
    """An expired token sends nothing for hours; the patient keeps writing. The document must
    stay far below Firestore's 1 MiB, and the webhook must keep answering 200."""
    from repositories.conversations import MAX_OUTBOX
    from service.conversation.outbox import flush_all_outboxes

    patient.starts_form()
    fake_graph.expire_token()
    for number in range(MAX_OUTBOX + 15):
        patient.says(f"x{number}")  # each answer gets one reply (a re-ask or the next step)
    stored = components.repos.conversations.raw(patient.wa_id)
    assert stored["outbox_pending"] == MAX_OUTBOX
    assert stored["dropped_replies"] == 15 and stored["last_drop"]["reason"] == "outbox_full"
    assert len(repr(stored)) < 400_000
    fake_graph.reset()
    patient.seen = 0
    patient.graph.customer_wrote(patient.wa_id)
    for _ in range(3):
        flush_all_outboxes(components)
    assert components.repos.conversations.raw(patient.wa_id)["outbox_pending"] == 0
    assert len(patient.new_replies()) == MAX_OUTBOX
