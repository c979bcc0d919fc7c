"""Drive the app as Meta and a patient would: signed webhook posts, replies read from the fake."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flask.testing import FlaskClient

from blueprints.context import EXTENSION_KEY
from devtools import payloads
from service.whatsapp.webhook import sign
from tests.support.fakes.graph import FakeGraphApi


def post_signed(client: FlaskClient, secret: str, payload: dict | bytes, path: str = "/webhook"):
    """Post a signed webhook delivery; once it is accepted, return when the replies it
    queued were sent.

    The webhook answers before its replies are sent (the app's sender sends them on its own
    threads); tests read what the patient received, so they wait for the sender to be idle.
    """
    raw = payload if isinstance(payload, bytes) else payloads.encode(payload)
    response = client.post(
        path,
        data=raw,
        content_type="application/json",
        headers={"X-Hub-Signature-256": sign(secret, raw)},
    )
    return replies_sent(client, response)


def replies_sent(client: FlaskClient, response):
    """Return a webhook's response once the app's sender sent what it queued (a refused
    delivery queued nothing to wait for)."""
    if response.status_code == 200:
        sender = client.application.extensions[EXTENSION_KEY].sender
        assert sender.wait_idle(30), "the sender did not finish within 30 s"
    return response


@dataclass
class Patient:
    """A patient on WhatsApp: sends messages through the signed webhook, reads the bot's replies."""

    client: FlaskClient
    graph: FakeGraphApi
    secret: str
    wa_id: str | None = "34612345678"  # None: a patient who writes under a username
    bsuid: str | None = None
    seen: int = 0
    sent: list[dict] = field(default_factory=list)
    clock: int = field(default_factory=lambda: int(time.time()))

    def _post(self, message: dict[str, Any]) -> list[dict]:
        self.graph.customer_wrote(self.wa_id, user_id=self.bsuid)
        self.sent.append(message)
        response = post_signed(self.client, self.secret, self.payload(message))
        assert response.status_code == 200, response.get_data(as_text=True)
        return self.new_replies()

    def _timestamp(self) -> int:
        self.clock += 1  # Meta's timestamps have one-second resolution; keep them increasing
        return self.clock

    def says(self, text: str) -> list[dict]:
        return self._post(payloads.text_message(text, timestamp=self._timestamp()))

    def presses(self, choice_id: str, title: str = "") -> list[dict]:
        return self._post(
            payloads.button_reply(choice_id, title or choice_id, timestamp=self._timestamp())
        )

    def picks(self, choice_id: str, title: str = "") -> list[dict]:
        return self._post(
            payloads.list_reply(choice_id, title or choice_id, timestamp=self._timestamp())
        )

    def sends(self, message: dict[str, Any]) -> list[dict]:
        return self._post({"timestamp": str(self._timestamp()), **message})

    def starts_form(self, language: str = "en") -> list[dict]:
        """Say hello, pick the language and consent: the form then asks for the name."""
        self.says("hello")
        self.presses(f"language:{language}")
        return self.presses("consent:yes")

    def redelivers(self, index: int = -1) -> list[dict]:
        """Meta delivers the same message again (same id and timestamp)."""
        message = self.sent[index]
        response = post_signed(self.client, self.secret, self.payload(message))
        assert response.status_code == 200
        return self.new_replies()

    def payload(self, message: dict[str, Any]) -> dict:
        """The webhook payload Meta sends for one of this patient's messages."""
        value = payloads.message_value(self.wa_id, message, user_id=self.bsuid)
        return payloads.envelope([value])

    def new_replies(self) -> list[dict]:
        messages = self.graph.messages_to(self.wa_id, self.bsuid)
        fresh = messages[self.seen :]
        self.seen = len(messages)
        return [message["body"] for message in fresh]


def body_text(reply: dict) -> str:
    if reply["type"] == "text":
        return reply["text"]["body"]
    if reply["type"] == "interactive":
        return reply["interactive"]["body"]["text"]
    return reply.get("template", {}).get("name", "")


def button_ids(reply: dict) -> list[str]:
    if reply.get("type") != "interactive" or reply["interactive"]["type"] != "button":
        return []
    return [button["reply"]["id"] for button in reply["interactive"]["action"]["buttons"]]


def row_ids(reply: dict) -> list[str]:
    if reply.get("type") != "interactive" or reply["interactive"]["type"] != "list":
        return []
    return [
        row["id"]
        for section in reply["interactive"]["action"]["sections"]
        for row in section["rows"]
    ]


def wait_for_replies(
    graph: FakeGraphApi, wa_id: str | None, count: int, user_id: str | None = None, within=10.0
) -> list[dict]:
    """Wait until the Graph API has taken `count` messages to a patient; return them all.

    A server answers the webhook before it sends the replies: tests of a gunicorn server
    wait for what a patient would see arrive, and fail when it does not within `within` s.
    """
    deadline = time.monotonic() + within
    while True:
        messages = graph.messages_to(wa_id, user_id)
        if len(messages) >= count or time.monotonic() > deadline:
            assert len(messages) >= count, f"{len(messages)} of {count} replies within {within} s"
            return messages
        time.sleep(0.02)


def wait_until_sent(conversations, who: str, within: float = 10.0) -> dict:
    """Wait until a patient's conversation has no reply left to send; return its document.

    A gunicorn server answers the webhook before its sender has sent the replies.
    """
    deadline = time.monotonic() + within
    while True:
        stored = conversations.raw(who) or {}
        if stored.get("outbox_pending") == 0 or time.monotonic() > deadline:
            return stored
        time.sleep(0.02)
