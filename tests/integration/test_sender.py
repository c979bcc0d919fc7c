"""Replies are sent off the webhook's request: Meta gets its answer at once, however slow the
Graph API is, and the patient still gets every reply once, in order."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from devtools import payloads
from service.conversation.sender import ReplySender
from service.whatsapp.webhook import sign
from tests.support.stack import APP_SECRET
from tests.support.whatsapp import body_text


def _post_without_waiting(client, patient, message: dict):
    """Post a patient's message as Meta does, and return as soon as the webhook answers."""
    patient.graph.customer_wrote(patient.wa_id)
    patient.sent.append(message)
    raw = payloads.encode(patient.payload(message))
    started = time.monotonic()
    response = client.post(
        "/webhook",
        data=raw,
        content_type="application/json",
        headers={"X-Hub-Signature-256": sign(APP_SECRET, raw)},
    )
    return response, time.monotonic() - started


def _texts(patient) -> list[str]:
    return [body_text(message["body"]) for message in patient.graph.messages_to(patient.wa_id)]


def test_the_webhook_answers_before_a_slow_graph_api_has_taken_the_reply(
    client, patient, fake_graph, components
):
    fake_graph.set_latency(1.5)
    message = payloads.text_message("hello", timestamp=patient._timestamp())
    response, took = _post_without_waiting(client, patient, message)
    assert response.status_code == 200
    assert took < 1.0, f"the webhook waited {took:.2f} s: it held Meta's request for the send"
    assert components.sender.wait_idle(10)
    assert len(fake_graph.messages_to(patient.wa_id)) == 1  # the language question, once
    assert components.repos.conversations.raw(patient.wa_id)["outbox_pending"] == 0


def test_messages_sent_while_the_previous_reply_is_in_flight_get_their_replies_in_order(
    client, patient, fake_graph, components
):
    """A patient taps twice and types while the Graph API is slow: each message commits at
    once, and the three replies still reach them once each, in the order of the messages."""
    fake_graph.set_latency(0.4)
    messages = [
        payloads.text_message("hello", timestamp=patient._timestamp()),
        payloads.button_reply("language:en", "English", timestamp=patient._timestamp()),
        payloads.button_reply("consent:yes", "Yes", timestamp=patient._timestamp()),
    ]
    for message in messages:
        response, took = _post_without_waiting(client, patient, message)
        assert response.status_code == 200 and took < 0.4
    assert components.sender.wait_idle(15)
    texts = _texts(patient)
    assert len(texts) == 3, texts
    assert "english" in texts[0].lower() or "language" in texts[0].lower()
    assert "agree" in texts[1].lower() and "name" in texts[2].lower()
    stored = components.repos.conversations.raw(patient.wa_id)
    assert stored["outbox_pending"] == 0 and len(stored["sent"]) == 3


def test_a_round_that_failed_is_retried_by_the_sender_without_waiting_for_the_flush_task(
    patient, fake_graph, components
):
    components.sender = ReplySender(components, 4, 1.0, retry_delays=(0.3, 0.6))
    patient.says("hello")
    fake_graph.fail_next(3, status=503, code=2)  # every attempt of the first round
    assert patient.presses("language:en") == []
    deadline = time.monotonic() + 10
    while not patient.graph.messages_to(patient.wa_id)[1:] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert components.sender.wait_idle(10)
    assert len(patient.new_replies()) == 1  # the consent question, once
    assert components.repos.conversations.raw(patient.wa_id)["outbox_pending"] == 0


def test_a_throttled_reply_is_not_retried_before_metas_retry_after(patient, fake_graph, components):
    components.sender = ReplySender(components, 4, 1.0, retry_delays=(0.1,))
    patient.says("hello")
    # Longer than the Graph client waits within one send (5 s): the sender must wait it out.
    fake_graph.fail_next(1, status=429, code=130429, retry_after=6)
    throttled_at = time.monotonic()
    assert patient.presses("language:en") == []
    while not patient.graph.messages_to(patient.wa_id)[1:]:
        assert time.monotonic() - throttled_at < 10, "the throttled reply never went"
        time.sleep(0.05)
    assert time.monotonic() - throttled_at >= 5.9  # Meta asked for 6 s
    throttled = [r for r in fake_graph.requests if r["status"] == 429]
    assert len(throttled) == 1  # no attempt in between


def test_replies_behind_another_process_lease_go_when_it_ends_without_a_flush(
    patient, fake_graph, components
):
    """Another instance leased the patient's queued reply and died: this process, which took
    the patient's next message, sends both in order once that lease has run out."""
    patient.says("hello")
    fake_graph.fail_next(3, status=503, code=2)
    patient.presses("language:en")  # its reply stays queued (the sender here does not retry)
    key, stored = components.repos.conversations.document(patient.wa_id)
    lease_ends = datetime.now(UTC) + timedelta(seconds=3)
    taken = [
        {**item, "claimed_until": lease_ends, "claimed_by": "gone"} for item in stored["outbox"]
    ]
    components.repos.firestore.collection("conversations").document(key).update({"outbox": taken})
    patient.presses("consent:yes")
    deadline = time.monotonic() + 15
    while len(fake_graph.messages_to(patient.wa_id)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    late = fake_graph.messages_to(patient.wa_id)[1:]
    assert len(late) == 2
    assert all(message["at"] >= lease_ends.timestamp() for message in late)
    texts = _texts(patient)
    assert "agree" in texts[1].lower() and "name" in texts[2].lower()


def test_a_stopping_process_sends_what_it_holds_within_its_drain_time(
    client, patient, fake_graph, components
):
    fake_graph.set_latency(0.5)
    message = payloads.text_message("hello", timestamp=patient._timestamp())
    response, _ = _post_without_waiting(client, patient, message)
    assert response.status_code == 200
    started = time.monotonic()
    assert components.sender.stop(5.0) is True
    assert time.monotonic() - started < 3
    assert len(fake_graph.messages_to(patient.wa_id)) == 1


def test_a_stopping_process_waits_no_longer_than_its_drain_time_and_sends_nothing_twice(
    client, patient, fake_graph, components
):
    fake_graph.set_latency(3.0)
    message = payloads.text_message("hello", timestamp=patient._timestamp())
    response, _ = _post_without_waiting(client, patient, message)
    assert response.status_code == 200
    started = time.monotonic()
    assert components.sender.stop(0.3) is False  # gave up within its drain time
    assert time.monotonic() - started < 1
    # Meta answers the send in flight later; the reply is settled or stays queued for another
    # process: never lost, never sent twice.
    time.sleep(3.5)
    fake_graph.set_latency(0)
    stored = components.repos.conversations.raw(patient.wa_id)
    assert stored["outbox_pending"] + len(stored.get("sent", [])) == 1
    assert len(fake_graph.messages_to(patient.wa_id)) == 1
