"""Conversations against gunicorn processes: concurrent duplicates, and logs free of PHI."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests

from service import payloads
from service.webhook import sign
from tests.integration.servers import gunicorn

SECRET = "dev-app-secret"
PHI = ["Maria Fernanda Lopez", "03/02/1980", "Calle Falsa 123", "28013 Madrid",
       "Type 2 diabetes", "Metformin 500mg", "34612345678", "1980-02-03"]  # fmt: skip


class RemotePatient:
    def __init__(self, bases: list[str], fake_graph, wa_id: str) -> None:
        self.bases, self.graph, self.wa_id = bases, fake_graph, wa_id
        self.clock = int(time.time())

    def message(self, kind: str, value: str, title: str = "") -> dict:
        self.clock += 1
        if kind == "text":
            return payloads.text_message(value, timestamp=self.clock)
        return payloads.button_reply(value, title or value, timestamp=self.clock)

    def post(self, message: dict, base: str | None = None) -> requests.Response:
        self.graph.customer_wrote(self.wa_id)
        raw = payloads.encode(payloads.envelope([payloads.message_value(self.wa_id, message)]))
        return requests.post(f"{base or self.bases[0]}/webhook", data=raw, timeout=30,
                             headers={"Content-Type": "application/json",
                                      "X-Hub-Signature-256": sign(SECRET, raw)})  # fmt: skip

    def says(self, text: str) -> None:
        assert self.post(self.message("text", text)).status_code == 200

    def presses(self, choice_id: str) -> None:
        assert self.post(self.message("choice", choice_id)).status_code == 200


@pytest.fixture
def two_servers(config, components, tmp_path: Path):
    log_path = tmp_path / "gunicorn.log"
    with gunicorn(config, log_path) as first, gunicorn(config, log_path) as second:
        yield [first, second], log_path


def test_one_message_delivered_to_two_processes_at_once_is_applied_and_answered_once(
    two_servers, fake_graph, components
):
    bases, _ = two_servers
    patient = RemotePatient(bases, fake_graph, "34611111111")
    patient.says("hello")
    patient.presses("language:en")
    patient.presses("consent:yes")
    for attempt in range(5):
        answer = "Maria Lopez" if attempt == 0 else "back"
        message = patient.message("text", answer)
        before = len(fake_graph.messages_to(patient.wa_id))
        barrier = threading.Barrier(len(bases))
        statuses: list[int] = []

        def deliver(base: str, message=message, barrier=barrier, statuses=statuses) -> None:
            barrier.wait()
            statuses.append(patient.post(message, base).status_code)

        threads = [threading.Thread(target=deliver, args=(base,)) for base in bases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200, 200]
        replies = fake_graph.messages_to(patient.wa_id)[before:]
        stored = components.repos.conversations.raw(patient.wa_id)
        assert stored["processed_ids"].count(message["id"]) == 1
        assert stored["outbox_pending"] == 0
        # Each reply this message queued went out exactly once: as many sends as queued keys.
        keys = [sent["key"] for sent in stored["sent"] if sent["key"].startswith(message["id"])]
        assert keys and len(keys) == len(set(keys)) == len(replies)


def test_a_whole_conversation_leaves_no_patient_data_in_the_logs(two_servers, fake_graph,
                                                                 components):  # fmt: skip
    bases, log_path = two_servers
    patient = RemotePatient(bases[:1], fake_graph, "34612345678")
    patient.says("hello")
    patient.presses("language:en")
    patient.presses("consent:yes")
    patient.says("Maria Fernanda Lopez")
    patient.says("31/02/1980")  # a re-ask, so the bad answer passes through too
    patient.says("03/02/1980")
    patient.presses("gender:female")
    patient.says("Calle Falsa 123, 28013 Madrid")
    patient.says("Type 2 diabetes")
    patient.says("Metformin 500mg")
    patient.presses("summary:confirm")
    assert components.repos.conversations.raw(patient.wa_id)["status"] == "completed"
    time.sleep(0.3)
    log = log_path.read_text()
    assert "inbound message processed" in log
    for value in PHI:
        assert value not in log, value
