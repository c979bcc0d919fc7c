"""The simulator's fake Graph endpoint: Meta's time-based limits and what the page is shown."""

from __future__ import annotations

from typing import Any

from service import payloads
from service.config import Config
from service.dev_graph import GraphInbox, display

CONFIG = Config(meta_access_token="token", whatsapp_phone_number_id="123")
AUTH = "Bearer token"
WA_ID = "34612345678"


class ManualClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def text(body: str = "hi", to: str = WA_ID) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": body}}


def answer(inbox: GraphInbox, body: object) -> tuple[int, int | None]:
    reply = inbox.answer(CONFIG, "v21.0", "123", AUTH, body)
    return reply.status, reply.body.get("error", {}).get("code")


def test_a_reply_goes_only_within_24_hours_of_the_patients_last_message():
    clock = ManualClock()
    inbox = GraphInbox(clock)
    assert answer(inbox, text()) == (400, 131047)

    inbox.record_patient(WA_ID, payloads.text_message("hello"))
    clock.now += 24 * 60 * 60 - 1
    assert answer(inbox, text()) == (200, None)
    clock.now += 1
    assert answer(inbox, text()) == (400, 131047)


def test_more_than_80_messages_in_one_second_are_throttled():
    clock = ManualClock()
    inbox = GraphInbox(clock)
    inbox.record_patient(WA_ID, payloads.text_message("hello"))

    statuses = [answer(inbox, text())[0] for _ in range(81)]
    assert statuses == [200] * 80 + [429]
    clock.now += 1.0
    assert answer(inbox, text()) == (200, None)


def test_statuses_move_forward_only_and_only_for_known_messages():
    inbox = GraphInbox(ManualClock())
    inbox.record_patient(WA_ID, payloads.text_message("hello"))
    wamid = inbox.answer(CONFIG, "v21.0", "123", AUTH, text()).body["messages"][0]["id"]

    assert inbox.mark(WA_ID, [wamid, "wamid.other"], "read") == 1
    assert inbox.mark(WA_ID, [wamid], "delivered") == 0
    assert inbox.statuses(WA_ID) == {wamid: "read"}


def test_messages_are_numbered_per_patient_and_read_after_a_sequence_number():
    inbox = GraphInbox(ManualClock())
    inbox.record_patient(WA_ID, payloads.text_message("one"))
    inbox.record_patient("447911123456", payloads.text_message("other patient"))
    inbox.record_patient(WA_ID, payloads.text_message("two"))

    assert [entry["text"] for entry in inbox.messages(WA_ID)] == ["one", "two"]
    assert [entry["seq"] for entry in inbox.messages(WA_ID, after=1)] == [2]
    assert inbox.patients() == ["34612345678", "447911123456"]


def test_a_list_is_shown_with_its_sections_and_rows():
    body = {
        "type": "interactive",
        "interactive": {
            "type": "list",
            "body": {"text": "Which answer?"},
            "footer": {"text": "Tap one"},
            "action": {
                "button": "Choose answer",
                "sections": [{"title": "Answers", "rows": [{"id": "edit:name", "title": "Name"}]}],
            },
        },
    }

    assert display(body) == {
        "kind": "list",
        "text": "Which answer?",
        "footer": "Tap one",
        "list_button": "Choose answer",
        "sections": [
            {
                "title": "Answers",
                "rows": [{"id": "edit:name", "title": "Name", "description": None}],
            }
        ],
    }


def test_a_patients_tap_is_shown_as_the_title_they_tapped():
    shown = display(payloads.list_reply("gender:female", "Female"))
    assert shown == {"kind": "choice", "text": "Female", "choice_id": "gender:female"}
