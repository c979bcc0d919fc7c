"""Meta-shaped webhook payloads, as the Cloud API sends them (for the simulator and tests)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

_counter = itertools.count(1)


def new_message_id() -> str:
    return f"wamid.SIM{time.time_ns():x}{next(_counter):06d}"


def envelope(values: list[dict[str, Any]], phone_number_id: str = "100000000000001") -> dict:
    """Wrap change values in Meta's entry/changes envelope."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": phone_number_id,
                            },
                            **value,
                        },
                        "field": "messages",
                    }
                    for value in values
                ],
            }
        ],
    }


def message_value(
    wa_id: str | None,
    message: dict[str, Any],
    profile_name: str = "Patient",
    user_id: str | None = None,
    username: str | None = None,
) -> dict:
    """A messages change from one patient: `wa_id` is their phone number (None for a patient
    who hides it behind a username), `user_id` their business-scoped user id (BSUID)."""
    profile = {"name": profile_name, **({"username": username} if username else {})}
    contact: dict[str, Any] = {"profile": profile}
    sender: dict[str, Any] = {}
    if wa_id is not None:
        contact["wa_id"] = sender["from"] = wa_id
    if user_id is not None:
        contact["user_id"] = sender["from_user_id"] = user_id
    return {"contacts": [contact], "messages": [{**sender, **message}]}


def system_value(
    kind: str,
    wa_id: str | None,
    user_id: str | None,
    new_wa_id: str | None = None,
    new_user_id: str | None = None,
    message_id: str | None = None,
) -> dict:
    """Meta's `user_changed_number` (new_wa_id) or `user_changed_user_id` (new_user_id) system
    message; system messages carry no contacts array."""
    system: dict[str, Any] = {"body": "User changed", "type": kind}
    if new_wa_id is not None:
        system["wa_id"] = new_wa_id
    if new_user_id is not None:
        system["user_id"] = new_user_id
        if user_id is not None:
            system["previous_user_id"] = user_id
    message: dict[str, Any] = {
        "id": message_id or new_message_id(),
        "timestamp": str(int(time.time())),
        "type": "system",
        "system": system,
    }
    if wa_id is not None:
        message["from"] = wa_id
    if user_id is not None:
        message["from_user_id"] = user_id
    return {"messages": [message]}


def _inbound(
    kind: str, content: dict[str, Any], message_id: str | None, timestamp: int | None
) -> dict:
    """An inbound message object: Meta's id and timestamp (a string of seconds), then content."""
    return {
        "id": message_id or new_message_id(),
        "timestamp": str(timestamp or int(time.time())),
        "type": kind,
        kind: content,
    }


def text_message(body: str, message_id: str | None = None, timestamp: int | None = None) -> dict:
    return _inbound("text", {"body": body}, message_id, timestamp)


def button_reply(
    choice_id: str, title: str, message_id: str | None = None, timestamp: int | None = None
) -> dict:
    content = {"type": "button_reply", "button_reply": {"id": choice_id, "title": title}}
    return _inbound("interactive", content, message_id, timestamp)


def template_button(
    payload: str, text: str, message_id: str | None = None, timestamp: int | None = None
) -> dict:
    """A tap on a template's quick-reply button: Meta sends its payload and its text."""
    return _inbound("button", {"payload": payload, "text": text}, message_id, timestamp)


def list_reply(
    choice_id: str, title: str, message_id: str | None = None, timestamp: int | None = None
) -> dict:
    content = {
        "type": "list_reply",
        "list_reply": {"id": choice_id, "title": title, "description": ""},
    }
    return _inbound("interactive", content, message_id, timestamp)


def status_value(
    wa_id: str | None,
    wamid: str,
    status: str,
    errors: list[dict] | None = None,
    user_id: str | None = None,
) -> dict:
    """A status update; a message sent to a BSUID reports it as recipient_user_id, and the
    phone number (recipient_id) only when Meta may share it."""
    entry: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(int(time.time()))}
    if wa_id is not None:
        entry["recipient_id"] = wa_id
    if user_id is not None:
        entry["recipient_user_id"] = user_id
    if errors:
        entry["errors"] = errors
    return {"statuses": [entry]}


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
