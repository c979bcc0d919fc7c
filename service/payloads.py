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


def message_value(wa_id: str, message: dict[str, Any], profile_name: str = "Patient") -> dict:
    return {
        "contacts": [{"profile": {"name": profile_name}, "wa_id": wa_id}],
        "messages": [{"from": wa_id, **message}],
    }


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


def list_reply(
    choice_id: str, title: str, message_id: str | None = None, timestamp: int | None = None
) -> dict:
    content = {
        "type": "list_reply",
        "list_reply": {"id": choice_id, "title": title, "description": ""},
    }
    return _inbound("interactive", content, message_id, timestamp)


def status_value(wa_id: str, wamid: str, status: str, errors: list[dict] | None = None) -> dict:
    entry: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": wa_id,
    }
    if errors:
        entry["errors"] = errors
    return {"statuses": [entry]}


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
