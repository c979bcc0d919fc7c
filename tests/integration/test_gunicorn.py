"""Conversations against gunicorn processes: concurrent duplicates, and logs free of PHI."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests

from devtools import payloads
from service.whatsapp.webhook import sign
from tests.support.servers import gunicorn
from tests.support.stack import APP_SECRET
from tests.support.whatsapp import wait_until_sent

PHI = ["Maria Fernanda Lopez", "03/02/1980", "Calle Falsa 123", "28013 Madrid",
       "Type 2 diabetes", "Metformin 500mg", "34612345678", "1980-02-03"]  # fmt: skip


class RemotePatient:
    def __init__(
        self, bases: list[str], fake_graph, wa_id: str | None, bsuid: str | None = None
    ) -> None:
        self.bases, self.graph, self.wa_id, self.bsuid = bases, fake_graph, wa_id, bsuid
        self.clock = int(time.time())

    def message(self, kind: str, value: str, title: str = "") -> dict:
        self.clock += 1
        if kind == "text":
            return payloads.text_message(value, timestamp=self.clock)
        return payloads.button_reply(value, title or value, timestamp=self.clock)

    def post(self, message: dict, base: str | None = None) -> requests.Response:
        self.graph.customer_wrote(self.wa_id, user_id=self.bsuid)
        value = payloads.message_value(self.wa_id, message, user_id=self.bsuid)
        return self.deliver(payloads.envelope([value]), base)

    def deliver(self, payload: dict, base: str | None = None) -> requests.Response:
        raw = payloads.encode(payload)
        return requests.post(f"{base or self.bases[0]}/webhook", data=raw, timeout=30,
                             headers={"Content-Type": "application/json",
                                      "X-Hub-Signature-256": sign(APP_SECRET, raw)})  # fmt: skip

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
        wait_until_sent(components.repos.conversations, patient.wa_id)
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
        stored = wait_until_sent(components.repos.conversations, patient.wa_id)
        replies = fake_graph.messages_to(patient.wa_id)[before:]
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


def complete_intake(patient: RemotePatient) -> None:
    patient.says("hello")
    patient.presses("language:es")
    patient.presses("consent:yes")
    patient.says("Maria Fernanda Lopez")
    patient.says("03/02/1980")
    patient.presses("gender:female")
    patient.says("Calle Falsa 123, 28013 Madrid")
    patient.says("Type 2 diabetes")
    patient.says("Metformin 500mg")
    patient.presses("summary:confirm")


def firestore_dump(stack, project_id: str) -> str:
    """Every document of every collection, ids, paths and fields, from the emulator's REST API
    (what anyone with read access to the database sees)."""
    base = f"http://{stack.env['FIRESTORE_EMULATOR_HOST']}/v1/projects/{project_id}"
    documents = f"{base}/databases/(default)/documents"
    auth = {"Authorization": "Bearer owner"}
    listed = requests.post(f"{documents}:listCollectionIds", json={}, headers=auth, timeout=10)
    collections = listed.json().get("collectionIds", [])
    assert "conversations" in collections and "intakes" in collections
    pages = []
    for collection in collections:
        token = ""
        while True:
            page = requests.get(f"{documents}/{collection}", headers=auth, timeout=10,
                                params={"pageSize": 300, "pageToken": token}).json()  # fmt: skip
            pages.append(json.dumps(page))
            token = page.get("nextPageToken", "")
            if not token:
                break
    return "\n".join(pages)


def test_several_intakes_leave_no_phone_number_or_bsuid_in_firestore_or_the_logs(
    two_servers, fake_graph, components, stack, config
):
    bases, log_path = two_servers
    by_bsuid = RemotePatient(bases[:1], fake_graph, None, "ES.1410018717833190")
    by_both = RemotePatient(bases[1:], fake_graph, "34612345678", "ES.2520029828944201")
    by_phone = RemotePatient(bases[:1], fake_graph, "447700900123")
    for patient in (by_bsuid, by_both, by_phone):
        complete_intake(patient)
    by_both.deliver(
        payloads.envelope(
            [
                payloads.system_value(
                    "user_changed_number",
                    "34612345678",
                    "ES.2520029828944201",
                    new_wa_id="34699887766",
                )
            ]
        )
    )
    by_phone.deliver(payloads.envelope([payloads.status_value(
        "447700900123", "wamid.X", "failed", [{"code": 131026}])]))  # fmt: skip
    by_both.wa_id = "34699887766"
    by_both.says("hola")
    for who in ("ES.1410018717833190", "34699887766", "447700900123"):
        assert components.repos.conversations.raw(who)["status"] == "completed"
    bsuid_replies = fake_graph.messages_to(None, "ES.1410018717833190")
    assert bsuid_replies and all("to" not in m["body"] for m in bsuid_replies)
    time.sleep(0.3)
    stored, log = firestore_dump(stack, config.project_id), log_path.read_text()
    assert "inbound message processed" in log and "patient identity changed" in log
    for value in ("34612345678", "34699887766", "447700900123", "ES.1410018717833190",
                  "ES.2520029828944201", "1410018717833190", "2520029828944201"):  # fmt: skip
        assert value not in stored, value
        assert value not in log, value
        assert value[-8:] not in stored and value[-8:] not in log, value
