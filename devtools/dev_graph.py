"""The fake Graph API endpoint behind the simulator: Meta's checks and the accepted messages.

It answers `POST /{version}/{phone_number_id}/messages` as Meta does (token, phone number id,
the body limits in `devtools.graph_rules`, which the tests' fake server shares, approved
templates, the 24-hour customer-service window, 80 messages/s) and keeps what it accepted per
patient, reduced to what the chat page shows. Like Meta, it knows each simulated person by both
their phone number and their business-scoped user id (BSUID): a message addressed by either
(`to` or `recipient`) lands in the one chat of that person and is checked against the one
24-hour window their messages opened. It does not model the per-recipient pair limit
(131056): a developer chatting quickly would hit it and learn nothing from it; the tests' fake
server covers it.
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devtools import graph_rules
from service.domain.identity import is_phone
from service.shell.config import Config

_REPLY_KINDS = ("button_reply", "list_reply")
_STATUS_ORDER = ("sent", "delivered", "read")
_SERVICE_WINDOW_SECONDS = 24 * 60 * 60
_THROUGHPUT_PER_SECOND = 80
_MESSAGES_KEPT = 500  # per patient; the page asks only for what follows the last one it shows
_VERSION = re.compile(r"v\d+\.\d+")


@dataclass(frozen=True)
class GraphAnswer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class _Refusal(Exception):
    def __init__(self, status: int, code: int, details: str | None = None, **envelope: Any) -> None:
        super().__init__(code)
        body = graph_rules.error_body(
            code, fbtrace_id=secrets.token_urlsafe(16), details=details, **envelope
        )
        headers = {}
        if code == 190:
            message = body["error"]["message"]
            headers["WWW-Authenticate"] = f'OAuth "Facebook Platform" "invalid_token" "{message}"'
        self.answer = GraphAnswer(status, body, headers)


class GraphInbox:
    """The fake Graph endpoint's memory: accepted messages per patient, and Meta's checks."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._chats: dict[str, deque[dict[str, Any]]] = {}
        self._last_seq: dict[str, int] = {}
        self._last_inbound: dict[str, float] = {}
        # BSUID -> the phone digits its person's chat is kept under, learned when they write.
        self._people: dict[str, str] = {}
        self._sent_times: deque[float] = deque()
        self._wamids = 0

    def answer(
        self,
        config: Config,
        version: str,
        phone_number_id: str,
        authorization: str | None,
        body: object,
    ) -> GraphAnswer:
        """Answer one `POST /{version}/{phone_number_id}/messages` as Meta would."""
        with self._lock:
            now = self._clock()
            try:
                person = self._check(config, version, phone_number_id, authorization, body, now)
            except _Refusal as refusal:
                return refusal.answer
            assert isinstance(body, dict)  # _check guarantees a valid message object
            self._wamids += 1
            # Like the test fake's: no phone number inside, so a logged wamid leaks nothing.
            wamid = f"wamid.DEV{self._wamids:06d}{secrets.token_hex(10).upper()}"
            self._sent_times.append(now)
            self._append(person, {"direction": "bot", "wamid": wamid, "status": "sent"}, body)
            return GraphAnswer(200, graph_rules.success_body(body, wamid))

    def _check(
        self,
        config: Config,
        version: str,
        phone_number_id: str,
        authorization: str | None,
        body: object,
        now: float,
    ) -> str:
        """Return the key of the person a message goes to (their phone digits, or the BSUID
        of someone who never wrote), or raise the refusal Meta would answer with."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), config.meta_access_token.encode()
        ):
            raise _Refusal(
                401, 190, message="Invalid OAuth access token - Cannot parse access token"
            )
        if not _VERSION.fullmatch(version):
            raise _Refusal(
                400, 100, message="Unsupported post request.", error_type="GraphMethodException"
            )
        if phone_number_id != config.whatsapp_phone_number_id:
            raise _Refusal(
                400,
                100,
                message=(
                    f"Unsupported post request. Object with ID '{phone_number_id}' does not "
                    "exist, cannot be loaded due to missing permissions, or does not support "
                    "this operation."
                ),
                error_type="GraphMethodException",
                subcode=33,
            )
        violation = graph_rules.first_violation(body)
        if violation is not None:
            raise _Refusal(400, violation.code, violation.details)
        assert isinstance(body, dict)
        person = self._person(graph_rules.recipient_of(body))
        if body.get("type", "text") == "template":
            name, language = body["template"]["name"], body["template"]["language"]["code"]
            # The approved templates: the invitation and the reminder (intake_reminder).
            if name not in (config.whatsapp_start_template, config.reminder_template):
                raise _Refusal(404, 132001, f"template name ({name}) does not exist in {language}")
        else:
            wrote_at = self._last_inbound.get(person)
            if wrote_at is None or not 0 <= now - wrote_at < _SERVICE_WINDOW_SECONDS:
                raise _Refusal(400, 131047, graph_rules.ERROR_DETAILS[131047])
        while self._sent_times and now - self._sent_times[0] >= 1.0:
            self._sent_times.popleft()
        if len(self._sent_times) >= _THROUGHPUT_PER_SECOND:
            raise _Refusal(429, 130429, graph_rules.ERROR_DETAILS[130429])
        return person

    def _person(self, address: str) -> str:
        """Return the key a phone's digits or a BSUID is kept under (the lock is held)."""
        return self._people.get(address, address)

    def record_patient(
        self, wa_id: str, message: dict[str, Any], user_id: str | None = None
    ) -> dict[str, Any]:
        """Keep a patient's message for the page; it opens the 24-hour window, as on Meta.

        `user_id` is the patient's BSUID: from then on a message sent to it goes to this
        patient's chat and window, as one sent to their phone number does.
        """
        with self._lock:
            if user_id is not None:
                self._people[user_id] = wa_id
            self._last_inbound[wa_id] = self._clock()
            entry = {"direction": "patient", "message_id": message["id"], "webhook_status": None}
            return dict(self._append(wa_id, entry, message))

    def settle_patient(self, wa_id: str, seq: int, webhook_status: int) -> dict[str, Any]:
        with self._lock:
            for entry in self._chats.get(wa_id, ()):
                if entry["seq"] == seq:
                    entry["webhook_status"] = webhook_status
                    return dict(entry)
        return {}

    def mark(self, wa_id: str, wamids: list[str], status: str) -> int:
        """Move bot messages forward to `status` (sent, delivered, read); never backwards."""
        updated = 0
        with self._lock:
            for entry in self._chats.get(self._person(wa_id), ()):
                if entry.get("wamid") in wamids and _STATUS_ORDER.index(
                    entry["status"]
                ) < _STATUS_ORDER.index(status):
                    entry["status"] = status
                    updated += 1
        return updated

    def messages(self, wa_id: str, after: int = 0) -> list[dict[str, Any]]:
        """Return copies of this patient's messages with a sequence number above `after`; the
        patient is named by their phone's digits or by a BSUID they wrote with."""
        with self._lock:
            chat = self._chats.get(self._person(wa_id), ())
            return [dict(entry) for entry in chat if entry["seq"] > after]

    def statuses(self, wa_id: str) -> dict[str, str]:
        """Return each bot message's delivery status by wamid (the page refreshes its ticks)."""
        with self._lock:
            return {
                entry["wamid"]: entry["status"]
                for entry in self._chats.get(self._person(wa_id), ())
                if entry["direction"] == "bot"
            }

    def patients(self) -> list[str]:
        """Return the phone digits of every simulated patient with a chat."""
        with self._lock:
            # A chat kept under a BSUID (a template to someone who never wrote) has no number.
            return sorted(key for key in self._chats if is_phone(key))

    def _append(self, wa_id: str, entry: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        seq = self._last_seq.get(wa_id, 0) + 1
        self._last_seq[wa_id] = seq
        entry = {
            "seq": seq,
            "at": datetime.fromtimestamp(self._clock(), UTC).isoformat(),
            **entry,
            **display(body),
        }
        self._chats.setdefault(wa_id, deque(maxlen=_MESSAGES_KEPT)).append(entry)
        return entry


def display(message: dict[str, Any]) -> dict[str, Any]:
    """Reduce a Graph message body (or a patient's webhook message) to what the page shows."""
    kind = message.get("type", "text")
    if kind == "text":
        return {"kind": "text", "text": message["text"]["body"]}
    if kind == "template":
        template = message["template"]
        return {"kind": "template", "text": template["name"], "language": template["language"]}
    interactive = message["interactive"]
    if interactive["type"] in _REPLY_KINDS:  # a patient's tap
        reply = interactive[interactive["type"]]
        return {"kind": "choice", "text": reply["title"], "choice_id": reply["id"]}
    shown: dict[str, Any] = {"kind": interactive["type"], "text": interactive["body"]["text"]}
    for part in ("header", "footer"):
        if isinstance(interactive.get(part), dict) and "text" in interactive[part]:
            shown[part] = interactive[part]["text"]
    action = interactive["action"]
    if interactive["type"] == "button":
        shown["buttons"] = [
            {"id": button["reply"]["id"], "title": button["reply"]["title"]}
            for button in action["buttons"]
        ]
    else:
        shown["list_button"] = action["button"]
        shown["sections"] = [
            {
                "title": section.get("title", ""),
                "rows": [
                    {"id": row["id"], "title": row["title"], "description": row.get("description")}
                    for row in section["rows"]
                ],
            }
            for section in action["sections"]
        ]
    return shown
