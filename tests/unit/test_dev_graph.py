"""The simulator's fake Graph endpoint: Meta's time-based limits and what the page is shown."""

from __future__ import annotations

from typing import Any

from devtools import payloads
from devtools.dev_graph import GraphInbox, display
from service.shell.config import Config

CONFIG = Config(meta_access_token="token", whatsapp_phone_number_id="123")
AUTH = "Bearer token"
WA_ID = "34612345678"
BSUID = "ES.1410018717833190"  # the same patient, as Meta names them to this business
OTHER_BSUID = "GB.2410018717833191"


class ManualClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def text(body: str = "hi", to: str = WA_ID) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": body}}


def text_to_user(body: str = "hi", recipient: str = BSUID) -> dict[str, Any]:
    """A message addressed as the service addresses a patient known only by a BSUID."""
    return {
        "messaging_product": "whatsapp",
        "recipient": recipient,
        "type": "text",
        "text": {"body": body},
    }


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


def test_a_patient_has_one_chat_whether_a_reply_is_addressed_by_phone_or_bsuid():
    inbox = GraphInbox(ManualClock())
    inbox.record_patient(WA_ID, payloads.text_message("hello"), user_id=BSUID)

    by_user = inbox.answer(CONFIG, "v21.0", "123", AUTH, text_to_user("by BSUID"))
    by_phone = inbox.answer(CONFIG, "v21.0", "123", AUTH, text("by phone"))

    assert (by_user.status, by_phone.status) == (200, 200)
    assert by_user.body["contacts"] == [{"input": BSUID, "user_id": BSUID}]
    shown = inbox.messages(WA_ID)
    assert [(entry["direction"], entry["text"]) for entry in shown] == [
        ("patient", "hello"),
        ("bot", "by BSUID"),
        ("bot", "by phone"),
    ]
    assert [entry["seq"] for entry in shown] == [1, 2, 3]
    assert inbox.messages(BSUID) == shown
    wamid = by_user.body["messages"][0]["id"]
    assert inbox.mark(BSUID, [wamid], "read") == 1
    assert inbox.statuses(WA_ID)[wamid] == "read"
    assert inbox.patients() == [WA_ID]


def test_one_24_hour_window_covers_both_addresses_of_a_patient():
    clock = ManualClock()
    inbox = GraphInbox(clock)
    inbox.record_patient(WA_ID, payloads.text_message("hello"), user_id=BSUID)

    clock.now += 24 * 60 * 60 - 1
    assert answer(inbox, text_to_user()) == (200, None)
    assert answer(inbox, text()) == (200, None)
    clock.now += 1
    assert answer(inbox, text_to_user()) == (400, 131047)
    assert answer(inbox, text()) == (400, 131047)
    # Writing by username (BSUID only) reopens the window for the phone too: one person.
    inbox.record_patient(WA_ID, payloads.text_message("back"), user_id=BSUID)
    assert answer(inbox, text()) == (200, None)
    assert answer(inbox, text_to_user()) == (200, None)


def test_a_bsuid_that_never_wrote_gets_no_free_form_message():
    inbox = GraphInbox(ManualClock())
    inbox.record_patient(WA_ID, payloads.text_message("hello"), user_id=BSUID)

    assert answer(inbox, text_to_user(recipient=OTHER_BSUID)) == (400, 131047)
    assert inbox.messages(OTHER_BSUID) == []


def test_a_message_with_neither_to_nor_recipient_is_refused():
    inbox = GraphInbox(ManualClock())
    inbox.record_patient(WA_ID, payloads.text_message("hello"), user_id=BSUID)
    body = text()
    del body["to"]

    reply = inbox.answer(CONFIG, "v21.0", "123", AUTH, body)

    assert (reply.status, reply.body["error"]["code"]) == (400, 100)
    assert "recipient" in reply.body["error"]["error_data"]["details"]
    assert [entry["direction"] for entry in inbox.messages(WA_ID)] == ["patient"]


def test_a_template_to_a_bsuid_that_never_wrote_is_not_listed_as_a_phone_number():
    inbox = GraphInbox(ManualClock())
    template = {
        "messaging_product": "whatsapp",
        "recipient": OTHER_BSUID,
        "type": "template",
        "template": {"name": CONFIG.whatsapp_start_template, "language": {"code": "en"}},
    }

    assert answer(inbox, template) == (200, None)
    assert [entry["kind"] for entry in inbox.messages(OTHER_BSUID)] == ["template"]
    assert inbox.patients() == []


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
