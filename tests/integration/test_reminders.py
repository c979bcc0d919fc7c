"""Reminders against the real stack: the outbox, the fake Graph API's window and templates,
the task's route, the stats, and two task runs at once through gunicorn."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from devtools import payloads
from service.accounts import providers as provider_service
from service.conversation.flow.catalog import say
from service.conversation.reminders import Outcome, remind_conversation, send_reminders
from service.domain.identity import PatientIdentity
from service.shell.cli import cli
from tests.support.portal import create_person, sign_in
from tests.support.reminders import daytime_phone, stall
from tests.support.servers import gunicorn, simulator_server
from tests.support.stack import APP_SECRET
from tests.support.whatsapp import Patient, body_text, button_ids, wait_for_replies


@pytest.fixture
def stalled_patient(client, fake_graph) -> Patient:
    """A patient in their daytime who answered up to the gender question, then went quiet."""
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=daytime_phone(1))
    patient.starts_form("en")
    patient.says("Maria Lopez")
    patient.says("03/02/1980")
    return patient


def due_at(components, patient: Patient) -> datetime:
    return (components.repos.conversations.raw(patient.wa_id) or {})["next_reminder_at"]


def run_at(components, moment: datetime):
    report = send_reminders(components, moment)
    assert components.sender.wait_idle(30)
    return report


def test_first_reminder_re_asks_the_question_the_patient_stopped_at(
    components, stalled_patient
) -> None:
    patient = stalled_patient
    patient.new_replies()
    first = due_at(components, patient)
    assert run_at(components, first - timedelta(minutes=1)).queued == 0
    report = run_at(components, first)
    (reminder,) = patient.new_replies()
    assert report.queued == 1
    assert body_text(reminder) == say("en", "reminder_nudge", "ask_gender")
    assert button_ids(reminder) == ["gender:female", "gender:male", "gender:other"]
    stored = components.repos.conversations.raw(patient.wa_id) or {}
    assert (stored["reminder_stage"], stored["next_reminder"]) == ("nudge", "last_nudge")
    assert stored["stalled_step"] == "gender" and stored["reminded_steps"] == ["gender"]
    assert stored["outbox_pending"] == 0
    # The same silence is never reminded twice, however often the task runs.
    assert run_at(components, first).queued == 0
    assert patient.new_replies() == []


def test_once_the_window_closed_the_last_reminder_is_the_approved_template_and_resumes(
    components, stalled_patient, fake_graph
) -> None:
    patient = stalled_patient
    patient.new_replies()
    run_at(components, due_at(components, patient))
    run_at(components, due_at(components, patient))
    nudges = patient.new_replies()
    assert [body_text(reply) for reply in nudges] == [
        say("en", "reminder_nudge", "ask_gender"),
        say("en", "reminder_last_nudge", "ask_gender"),
    ]
    fake_graph.customer_wrote(patient.wa_id, at=time.time() - 2 * 24 * 3600)  # window closed
    report = run_at(components, due_at(components, patient))
    (template,) = patient.new_replies()
    assert report.queued == 1
    assert template["type"] == "template"
    assert template["template"]["name"] == "intake_reminder"
    assert template["template"]["components"][0]["parameters"][0]["payload"] == "resume"
    assert not [r for r in fake_graph.requests if r["status"] != 200]
    stored = components.repos.conversations.raw(patient.wa_id) or {}
    assert stored["next_reminder_at"] is None and stored["reminders_sent"] == 3
    # The template's button brings the question back; the patient's message restarts the
    # schedule from the first nudge.
    (again,) = patient.sends(payloads.template_button("resume", "Continue"))
    assert button_ids(again) == ["gender:female", "gender:male", "gender:other"]
    stored = components.repos.conversations.raw(patient.wa_id) or {}
    assert stored["next_reminder"] == "nudge" and stored["reminder_stage"] is None


def test_a_free_form_reminder_outside_the_window_is_refused_by_the_fake_graph_api(
    components, stalled_patient, fake_graph
) -> None:
    patient = stalled_patient
    patient.new_replies()
    fake_graph.customer_wrote(patient.wa_id, at=time.time() - 25 * 3600)
    run_at(components, due_at(components, patient))
    codes = [r["response"]["error"]["code"] for r in fake_graph.requests if r["status"] != 200]
    assert codes == [131047]


@pytest.mark.parametrize(
    "ending",
    [["STOP"], ["delete my data", "yes"]],
    ids=["stop", "erasure"],
)
def test_no_reminder_after_stop_or_erasure(components, stalled_patient, ending) -> None:
    patient = stalled_patient
    first = due_at(components, patient)
    for text in ending:
        patient.says(text)
    patient.new_replies()
    stored = components.repos.conversations.raw(patient.wa_id) or {}
    assert stored["next_reminder_at"] is None
    assert run_at(components, first + timedelta(days=4)).due == 0
    assert patient.new_replies() == []


def test_no_reminder_after_a_declined_consent(components, client, fake_graph) -> None:
    patient = Patient(client, fake_graph, APP_SECRET, wa_id=daytime_phone(2))
    patient.says("hello")
    patient.presses("language:en")
    stored = components.repos.conversations.raw(patient.wa_id) or {}
    assert stored["next_reminder"] == "nudge"
    patient.presses("consent:no")
    stored = components.repos.conversations.raw(patient.wa_id) or {}
    assert stored["status"] == "opted_out" and stored["next_reminder_at"] is None


def test_an_invitation_never_answered_gets_the_start_template_once_more(
    client, components, fake_graph, provider_headers
) -> None:
    phone = daytime_phone(3)
    response = client.post("/startConversation", json={"to": f"+{phone}"}, headers=provider_headers)
    assert response.status_code == 202
    stored = components.repos.conversations.raw(phone) or {}
    assert stored["next_reminder"] == "invitation"
    assert stored["next_reminder_at"] - stored["invited_at"] >= timedelta(days=1)
    run_at(components, stored["next_reminder_at"])
    run_at(components, stored["next_reminder_at"] + timedelta(days=3))
    templates = [m["body"]["template"]["name"] for m in fake_graph.messages_to(phone)]
    assert templates == ["intake_start", "intake_start"]


def test_the_reminder_task_is_for_the_scheduler_and_says_what_it_did(
    client, components, provider_headers
) -> None:
    scheduler = provider_service.create_provider(
        components.repos.providers, "Cloud Scheduler", provider_service.Role.SCHEDULER
    )
    assert client.post("/tasks/send-reminders", headers=provider_headers).status_code == 403
    response = client.post(
        "/tasks/send-reminders", headers={"Authorization": f"Bearer {scheduler.token}"}
    )
    assert response.status_code == 200
    assert response.get_json()["due"] == 0 and response.get_json()["complete"] is True


def test_stats_count_where_patients_stopped_were_reminded_and_completed(
    components, stalled_patient, runner
) -> None:
    patient = stalled_patient
    run_at(components, due_at(components, patient))
    result = runner.invoke(cli, ["stats", "--json"], obj=components)
    assert result.exit_code == 0, result.output
    rows = {row["step"]: row for row in map(json.loads, result.output.splitlines())}
    assert rows["gender"] == {
        "step": "gender",
        "stopped": 1,
        "reminded": 1,
        "completed_after_reminder": 0,
    }
    assert rows["name"]["stopped"] == 0
    patient.presses("gender:female")
    patient.says("Calle Falsa 123, 28013 Madrid")
    patient.says("none")
    patient.says("none")
    patient.presses("summary:confirm")
    assert (components.repos.conversations.raw(patient.wa_id) or {})["status"] == "completed"
    after = runner.invoke(cli, ["stats", "--json"], obj=components).output
    rows = {row["step"]: row for row in map(json.loads, after.splitlines())}
    assert rows["gender"]["completed_after_reminder"] == 1 and rows["gender"]["stopped"] == 0
    assert "Calle" not in result.output


def test_two_task_runs_at_once_through_gunicorn_send_each_reminder_once(
    config, components, fake_graph, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    phones = [daytime_phone(100 + index, now) for index in range(24)]
    for index, phone in enumerate(phones):
        fake_graph.customer_wrote(phone, at=time.time() - 5 * 3600)
        stall(
            components.repos.conversations,
            PatientIdentity(phone=phone),
            ("name", "gender", "address")[index % 3],
            now - timedelta(hours=5),
            config,
        )
    token = provider_service.create_provider(
        components.repos.providers, "Cloud Scheduler", provider_service.Role.SCHEDULER
    ).token
    with gunicorn(config, tmp_path / "gunicorn.log", workers=2) as base:
        barrier = threading.Barrier(4)
        answers: list[dict] = []

        def run() -> None:
            barrier.wait()
            response = requests.post(
                f"{base}/tasks/send-reminders",
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
            assert response.status_code == 200
            answers.append(response.json())

        runs = [threading.Thread(target=run) for _ in range(4)]
        for thread in runs:
            thread.start()
        for thread in runs:
            thread.join()
        for phone in phones:
            wait_for_replies(fake_graph, phone, 1, within=30)
        time.sleep(1.0)  # a duplicate would have arrived by now
    assert sum(answer["queued"] for answer in answers) == len(phones)
    for phone in phones:
        (reminder,) = fake_graph.messages_to(phone)
        assert body_text(reminder["body"]).startswith(say("en", "reminder_nudge"))


def test_a_conversation_no_longer_due_is_left_alone(components, stalled_patient) -> None:
    key = components.repos.conversations.find(stalled_patient.wa_id)
    assert key is not None
    assert remind_conversation(components, key, datetime.now(UTC)) == Outcome.NOT_DUE


def test_the_simulators_clock_button_shows_a_stalled_patient_the_first_reminder(
    config, tmp_path: Path
) -> None:
    # In its daytime when the clock has moved, so the reminder is not kept for the morning.
    phone = daytime_phone(7, datetime.now(UTC) + timedelta(hours=4, minutes=5))

    def send(**body) -> None:
        answer = requests.post(f"{base}/dev/chat/send", json={"wa_id": phone, **body}, timeout=30)
        assert answer.status_code == 200, answer.text

    def bot_texts() -> list[str]:
        answer = requests.get(f"{base}/dev/chat/messages?wa_id={phone}", timeout=10).json()
        return [entry["text"] for entry in answer["messages"] if entry["direction"] == "bot"]

    with simulator_server(config, tmp_path / "simulator.log") as base:
        send(text="hello")
        send(reply={"type": "button_reply", "id": "language:en", "title": "English"})
        moved = requests.post(f"{base}/dev/clock", json={"hours": 4}, timeout=60).json()
        assert moved["ahead_hours"] == 4 and moved["reminders"]["queued"] == 1
        expected = say("en", "reminder_nudge", "ask_consent")
        deadline = time.monotonic() + 10
        while expected not in bot_texts() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert bot_texts()[-1] == expected
        refused = requests.post(f"{base}/dev/clock", json={"hours": 0}, timeout=10)
        assert refused.status_code == 400


def test_the_portal_dashboard_shows_where_patients_were_reminded(
    client, components, stalled_patient
) -> None:
    run_at(components, due_at(components, stalled_patient))
    staff = create_person(components, "sam@clinic.example", "Sam Staff")
    sign_in(client, components, staff)
    page = client.get("/portal/").get_data(as_text=True)
    row = re.search(r'<tr data-reminders="gender">(.*?)</tr>', page, re.S)
    assert row is not None
    assert re.findall(r"<td>(\d+)</td>", row.group(1)) == ["1", "1", "0"]
    assert "Maria" not in page
