"""Faults under the webhook: dependencies down, a gunicorn worker SIGKILLed mid-message, KMS
missing at a production start. The webhook answers 5xx so Meta retries, and the redelivery
completes the conversation with nothing lost or answered twice."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

from devtools import payloads
from devtools.devstack import LocalStack, free_port
from service.accounts.providers import Role, create_provider
from service.domain.record import reference_code
from service.whatsapp.webhook import sign
from tests.support.fakes.kms import FakeKms, handler_for
from tests.support.servers import PRODUCTION_APP, eventually_ready, gunicorn
from tests.support.stack import APP_SECRET
from tests.support.whatsapp import Patient, post_signed, wait_for_replies, wait_until_sent


@pytest.fixture
def scheduler_token(components) -> str:
    return create_provider(components.repos.providers, "Cloud Scheduler", Role.SCHEDULER).token


def _post_expecting_failure(patient: Patient, message: dict) -> int:
    from devtools import payloads

    patient.sent.append(message)
    envelope = payloads.envelope([payloads.message_value(patient.wa_id, message)])
    return post_signed(patient.client, patient.secret, envelope).status_code


def test_firestore_down_gets_5xx_and_the_redelivery_completes_the_step(
    patient, client, components, stack: LocalStack
):
    from devtools import payloads

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


def test_firestore_frozen_during_traffic_then_back_completes_every_conversation_once(
    client, components, fake_graph, stack: LocalStack
):
    """The emulator frozen (SIGSTOP: it keeps its data, unlike a restart) while patients are
    mid-form: every delivery gets 503 quickly and /readyz names Firestore; once it answers
    again, Meta's redeliveries complete every conversation, each reply once, one record each."""
    patients = [Patient(client, fake_graph, APP_SECRET, wa_id=f"3461300000{n}") for n in range(2)]
    for patient in patients:
        patient.starts_form()
    pending = [
        payloads.text_message("Maria Lopez", timestamp=patient._timestamp()) for patient in patients
    ]
    emulator = stack.firestore.process
    os.killpg(emulator.pid, signal.SIGSTOP)
    try:
        for patient, message in zip(patients, pending, strict=True):
            started = time.monotonic()
            assert _post_expecting_failure(patient, message) == 503
            assert time.monotonic() - started < 20
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json["checks"]["firestore"] != "ok"
    finally:
        os.killpg(emulator.pid, signal.SIGCONT)
    assert eventually_ready(client)
    for patient in patients:
        assert len(patient.redelivers()) == 1  # the date-of-birth question, once
        assert patient.redelivers() == []
        for answer in ("03/02/1980", "f", "Calle Falsa 123, Madrid", "none", "none"):
            patient.says(answer)
        patient.presses("summary:confirm")
        stored = components.repos.conversations.raw(patient.wa_id)
        assert stored["status"] == "completed" and len(stored["record_ids"]) == 1
        assert components.repos.archive.read(stored["record_ids"][0]).name == "Maria Lopez"
    assert len(list(components.repos.firestore.collection("intakes").stream())) == 2


def test_storage_down_at_confirm_never_marks_the_form_completed(
    patient, client, components, stack: LocalStack, initial_keyset
):
    for answer in ("hello",):
        patient.says(answer)
    patient.presses("language:en")
    patient.presses("consent:yes")
    for answer in ("Maria Lopez", "03/02/1980", "f", "Calle Falsa 123, Madrid", "none", "none"):
        patient.says(answer)
    from devtools import payloads

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


# -- a gunicorn worker killed (SIGKILL) in the middle of a conversation ----------------------

LEASE_SECONDS = 3  # short, so the test sees a dead worker's lease run out
FORM = [
    ("text", "hello"), ("choice", "language:en"), ("choice", "consent:yes"),
    ("text", "Maria Lopez"), ("text", "03/02/1980"), ("choice", "gender:female"),
    ("text", "Calle Falsa 123, Madrid"), ("text", "none"), ("text", "none"),
    ("choice", "summary:confirm"),
]  # fmt: skip
NAME, CONFIRM = 4, 10  # positions in FORM, counted from 1 as the failpoints count


class RemotePatient:
    """A patient whose messages Meta posts, signed, to a gunicorn server."""

    def __init__(self, base: str, graph, wa_id: str, components) -> None:
        self.base, self.graph, self.wa_id = base, graph, wa_id
        self.components = components
        clock = int(time.time())
        self.messages = [
            payloads.text_message(value, timestamp=clock + index)
            if kind == "text"
            else payloads.button_reply(value, value, timestamp=clock + index)
            for index, (kind, value) in enumerate(FORM, start=1)
        ]

    def deliver(
        self, position: int, client: FlaskClient | None = None, settled: bool = True
    ) -> int | None:
        """Post FORM's message at `position` (from 1) to the server, or to an in-process
        client; return the status, or None when the worker died under the request.

        The server answers before it sends; with `settled`, wait (up to 10 s) until its
        replies were sent and recorded, as a patient reads the question before answering."""
        self.graph.customer_wrote(self.wa_id)
        message = self.messages[position - 1]
        envelope = payloads.envelope([payloads.message_value(self.wa_id, message)])
        if client is not None:
            return post_signed(client, APP_SECRET, envelope).status_code
        raw = payloads.encode(envelope)
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(APP_SECRET, raw)}
        try:
            status = requests.post(f"{self.base}/webhook", data=raw, headers=headers,
                                   timeout=30).status_code  # fmt: skip
        except requests.ConnectionError:
            return None
        if settled and status == 200:
            wait_until_sent(self.components.repos.conversations, self.wa_id)
        return status

    def wait_until(self, condition, within: float = 10.0) -> dict:
        """Wait until the stored conversation meets `condition`; return it."""
        deadline = time.monotonic() + within
        while True:
            stored = self.components.repos.conversations.raw(self.wa_id) or {}
            if condition(stored) or time.monotonic() > deadline:
                return stored
            time.sleep(0.02)

    def replies(self) -> list[dict]:
        return [message["body"] for message in self.graph.messages_to(self.wa_id)]


def _normalised(replies: list[dict], wa_id: str, record_ids: list[str]) -> list[str]:
    """The replies as text, with what differs between two patients' runs blanked out."""
    text = [json.dumps(reply, sort_keys=True).replace(wa_id, "WA_ID") for reply in replies]
    for record_id in record_ids:
        text = [item.replace(reference_code(record_id), "REFERENCE") for item in text]
    return text


@dataclass
class Reference:
    replies: list[str]
    record_id: str


@pytest.fixture
def reference(client, fake_graph, components) -> Reference:
    """The same form with no fault, in process: the replies every patient must get, once each."""
    patient = Patient(client, fake_graph, APP_SECRET, wa_id="34699000001")
    for kind, value in FORM:
        patient.says(value) if kind == "text" else patient.presses(value)
    record_ids = components.repos.conversations.raw(patient.wa_id)["record_ids"]
    replies = [message["body"] for message in fake_graph.messages_to(patient.wa_id)]
    assert len(record_ids) == 1 and len(replies) >= len(FORM)
    return Reference(_normalised(replies, patient.wa_id, record_ids), record_ids[0])


def _wait_for_a_fresh_worker(base: str) -> None:
    """gunicorn's master replaces a killed worker; wait until the new one answers."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError("gunicorn did not replace the killed worker within 30 s")


def _wait_for_the_kill(log: Path) -> None:
    """Wait until gunicorn's master saw its worker die of the failpoint's SIGKILL."""
    deadline = time.monotonic() + 10
    while "SIGKILL" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the failpoint did not kill the worker"
        time.sleep(0.05)


def _flush_outbox(base: str, scheduler_token: str) -> requests.Response:
    """Call the flush task on the server, as the Cloud Scheduler job does."""
    return requests.post(
        f"{base}/tasks/flush-outbox",
        headers={"Authorization": f"Bearer {scheduler_token}"},
        timeout=30,
    )


def _assert_exactly_one_record_each(components, reference: Reference, wa_id: str) -> None:
    """The patient's conversation owns one record, indexed once and stored once; no stray copy."""
    record_ids = components.repos.conversations.raw(wa_id)["record_ids"]
    assert len(record_ids) == 1
    expected = sorted([reference.record_id, record_ids[0]])
    index = sorted(
        snapshot.id for snapshot in components.repos.firestore.collection("intakes").stream()
    )
    objects = [blob.name for blob in components.repos.bucket.list_blobs(prefix="intakes/")]
    assert index == expected
    assert sorted(name.rsplit("/", 1)[-1].removesuffix(".tink") for name in objects) == expected
    assert components.repos.archive.read(record_ids[0]).name == "Maria Lopez"


KILLS = [
    pytest.param("conversation.after_commit", NAME, id="after-commit-mid-form"),
    pytest.param("conversation.before_commit", NAME, id="before-commit-mid-form"),
    pytest.param("conversation.after_commit", CONFIRM, id="after-commit-at-confirm"),
    pytest.param("conversation.archive_stored", CONFIRM, id="archive-stored-at-confirm"),
]


@pytest.mark.parametrize(("point", "position"), KILLS)
def test_a_worker_killed_mid_message_is_recovered_by_redelivery_with_every_reply_once(
    point, position, config, components, client, fake_graph, reference, scheduler_token, tmp_path
):
    committed = point == "conversation.after_commit"
    nth = 1 if point == "conversation.archive_stored" else position  # it is reached at Confirm only
    faulty = config.replace(failpoints=f"{point}:kill@{nth}", outbox_lease_seconds=LEASE_SECONDS)
    with gunicorn(faulty, tmp_path / "gunicorn.log", workers=1) as base:
        patient = RemotePatient(base, fake_graph, "34612345678", components)
        for earlier in range(1, position):
            assert patient.deliver(earlier) == 200
        before = len(patient.replies())
        assert patient.deliver(position) is None  # SIGKILL: no answer, so Meta will redeliver
        leased_until = time.monotonic() + LEASE_SECONDS
        message_id = patient.messages[position - 1]["id"]
        stored = components.repos.conversations.raw(patient.wa_id)
        assert (message_id in stored["processed_ids"]) is committed
        assert len(patient.replies()) == before
        if position == CONFIRM and not committed:
            # The object was written, but neither its index entry nor the completion committed.
            assert stored["status"] != "completed"
            objects = list(components.repos.bucket.list_blobs(prefix="intakes/"))
            index = list(components.repos.firestore.collection("intakes").stream())
            assert (len(objects), len(index)) == (2, 1)  # the reference patient's, and this one
        if committed:
            # Redelivered at once (to another process): the dead worker's lease still holds
            # the replies, and nobody can tell a dead holder from a slow one, so nothing goes
            # out yet rather than possibly twice...
            assert patient.deliver(position, client) == 200
            assert time.monotonic() < leased_until, "the test was too slow to see the lease"
            assert len(patient.replies()) == before
            _wait_for_a_fresh_worker(base)
            time.sleep(max(0.0, leased_until - time.monotonic()) + 0.2)
            # ...and once it runs out, they go: the process that took the redelivery looks
            # again when the lease ends, and the flush task or the next redelivery would too.
            if position == CONFIRM:
                assert patient.deliver(position) == 200
            else:  # Cloud Scheduler's job
                assert _flush_outbox(base, scheduler_token).status_code == 200
            wait_for_replies(fake_graph, patient.wa_id, before + 1)
        else:
            _wait_for_a_fresh_worker(base)
            # The fresh worker would reach a kill@1 failpoint again: that one goes elsewhere.
            again = client if nth == 1 else None
            assert patient.deliver(position, again) == 200
        assert len(patient.replies()) > before
        assert patient.deliver(position) == 200  # one more redelivery changes nothing
        stored = components.repos.conversations.raw(patient.wa_id)
        assert stored["processed_ids"].count(message_id) == 1
        assert stored["outbox_pending"] == 0
    # The rest of the form in process: the restarted worker's failpoint counts afresh.
    for later in range(position + 1, len(FORM) + 1):
        assert patient.deliver(later, client) == 200
    record_ids = components.repos.conversations.raw(patient.wa_id)["record_ids"]
    assert _normalised(patient.replies(), patient.wa_id, record_ids) == reference.replies
    _assert_exactly_one_record_each(components, reference, patient.wa_id)


def test_a_worker_killed_between_a_send_and_its_settle_repeats_that_one_reply_only(
    config, components, client, fake_graph, reference, scheduler_token, tmp_path
):
    """Killed after the Graph API took a reply and before it was recorded as sent: Meta has
    no idempotency key, so that reply goes again once its lease runs out (at least once). The
    replies sent before it in the same round were each recorded at once and do not repeat."""
    position = NAME  # its reply is held back, so the next message's round sends two replies
    nth = position + 1  # sends here: one per earlier message, then the round's two
    faulty = config.replace(
        failpoints=f"conversation.after_send:kill@{nth}", outbox_lease_seconds=LEASE_SECONDS
    )
    with gunicorn(faulty, tmp_path / "gunicorn.log", workers=1) as base:
        patient = RemotePatient(base, fake_graph, "34612345678", components)
        for earlier in range(1, position):
            assert patient.deliver(earlier) == 200
        # Throttled with a Retry-After of a minute: the sender waits that long to retry, so
        # the reply is still queued when the patient writes again.
        fake_graph.fail_next(1, status=429, code=130429, retry_after=60)
        assert patient.deliver(position, settled=False) == 200
        stored = patient.wait_until(lambda stored: stored["outbox"][0].get("attempts") == 1)
        assert stored["outbox_pending"] == 1
        # Answered at once; the sender is killed after the round's second send.
        assert patient.deliver(position + 1, settled=False) == 200
        assert len(wait_for_replies(fake_graph, patient.wa_id, position + 1)) == position + 1
        _wait_for_the_kill(tmp_path / "gunicorn.log")
        _wait_for_a_fresh_worker(base)
        time.sleep(LEASE_SECONDS + 0.2)
        flushed = _flush_outbox(base, scheduler_token)
        assert flushed.status_code == 200 and flushed.json()["sent"] == 1
    for later in range(position + 2, len(FORM) + 1):
        assert patient.deliver(later, client) == 200
    record_ids = components.repos.conversations.raw(patient.wa_id)["record_ids"]
    got = _normalised(patient.replies(), patient.wa_id, record_ids)
    last = position + 1  # the reply sent just before the kill, and only that one, twice
    assert (
        got == reference.replies[:last] + [reference.replies[last - 1]] + reference.replies[last:]
    )
    _assert_exactly_one_record_each(components, reference, patient.wa_id)


def test_replies_queued_behind_a_dead_workers_lease_wait_for_it_and_keep_their_order(
    config, components, client, fake_graph, reference, scheduler_token, tmp_path
):
    """Killed after the commit, before the send: the reply stays leased to the dead worker.
    A next message answered meanwhile must not overtake it: the patient would read the
    questions out of order. Both go, in order, once the lease runs out."""
    position = NAME
    faulty = config.replace(
        failpoints=f"conversation.after_commit:kill@{position}", outbox_lease_seconds=LEASE_SECONDS
    )
    with gunicorn(faulty, tmp_path / "gunicorn.log", workers=1) as base:
        patient = RemotePatient(base, fake_graph, "34612345678", components)
        for earlier in range(1, position):
            assert patient.deliver(earlier) == 200
        before = len(patient.replies())
        assert patient.deliver(position) is None  # committed, not sent
        leased_until = time.monotonic() + LEASE_SECONDS
        assert patient.deliver(position + 1, client) == 200  # the patient writes on
        time.sleep(0.5)
        assert time.monotonic() < leased_until, "the test was too slow to see the lease"
        assert len(patient.replies()) == before  # held behind the leased reply
        time.sleep(max(0.0, leased_until - time.monotonic()) + 0.2)
        _wait_for_a_fresh_worker(base)
        # The process that took the next message looks again when the lease ends; the
        # flush task would send them too. Either way: both, once each, in order.
        assert _flush_outbox(base, scheduler_token).status_code == 200
        wait_for_replies(fake_graph, patient.wa_id, before + 2)
    for later in range(position + 2, len(FORM) + 1):
        assert patient.deliver(later, client) == 200
    record_ids = components.repos.conversations.raw(patient.wa_id)["record_ids"]
    assert _normalised(patient.replies(), patient.wa_id, record_ids) == reference.replies
    _assert_exactly_one_record_each(components, reference, patient.wa_id)


# -- KMS unreachable when a production process starts ----------------------------------------


def _hello(wa_id: str) -> bytes:
    message = payloads.text_message("hello")
    return payloads.encode(payloads.envelope([payloads.message_value(wa_id, message)]))


def _post_raw(base: str, raw: bytes) -> int:
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(APP_SECRET, raw)}
    return requests.post(f"{base}/webhook", data=raw, headers=headers, timeout=30).status_code


@contextlib.contextmanager
def _kms_on_port(fake_kms: FakeKms, port: int) -> Iterator[None]:
    """Serve the session's fake KMS (same keys) on a given port too: KMS coming back."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(fake_kms))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_production_started_without_kms_refuses_patients_then_recovers_without_a_restart(
    config, components, fake_kms, fake_graph, tmp_path
):
    kms_port = free_port()  # nothing listens there yet
    production = config.replace(kms_endpoint=f"http://127.0.0.1:{kms_port}")
    log_path = tmp_path / "gunicorn.log"
    wa_id = "34612345678"
    fake_graph.customer_wrote(wa_id)
    with gunicorn(production, log_path, workers=1, threads=4, app=PRODUCTION_APP) as base:
        ready = requests.get(f"{base}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["checks"]["keys"] != "ok" and "KMS" in ready.json()["checks"]["keys"]
        started = time.monotonic()
        # Meta's deliveries and redeliveries: each refused with 503, quickly, nothing stored.
        raw = _hello(wa_id)
        assert [_post_raw(base, raw) for _ in range(4)] == [503] * 4
        # Fast: between load attempts (one per 5 s) nobody waits for KMS's timeout again.
        assert time.monotonic() - started < 4
        assert components.repos.conversations.raw(wa_id) is None
        assert fake_graph.messages_to(wa_id) == []
        with _kms_on_port(fake_kms, kms_port):
            deadline = time.monotonic() + 20
            while requests.get(f"{base}/readyz", timeout=30).status_code != 200:
                assert time.monotonic() < deadline, "not ready 20 s after KMS came back"
                time.sleep(0.5)
            assert _post_raw(base, raw) == 200
        assert fake_graph.messages_to(wa_id)
        assert components.repos.conversations.raw(wa_id)["status"] == "in_progress"
    log = log_path.read_text()
    assert "Traceback" not in log
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    messages = [entry["message"] for entry in entries]
    assert sum("key material unavailable at start" in message for message in messages) == 1
    assert "key material loaded after an earlier failure" in messages
    # Besides that line, one line for the refused deliveries (the 503's error, once a minute
    # however many Meta sends), nothing more.
    errors = [entry for entry in entries if entry["severity"] == "ERROR"]
    assert len(errors) == 1 + 1
