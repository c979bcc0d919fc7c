"""Meta webhook payloads: signature check and parsing into inbound messages and status updates.

Payload reference: https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components
Parsing is defensive: every field may be missing or of the wrong type, and nothing here raises
for a malformed part; it is skipped and counted, so a well-signed payload always gets 200.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from service.errors import InvalidInputError
from service.flow.model import Inbound

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
# The same rule as IntakeRecord.wa_id: E.164 numbers have 7 (Niue, Tokelau) to 15 digits.
_WA_ID = re.compile(r"[0-9]{7,15}")
_MESSAGE_ID = re.compile(r"[A-Za-z0-9._=:+/-]{1,256}")
_STATUSES = ("sent", "delivered", "read", "failed", "deleted", "warning")
_MAX_TEXT = 4096


def signature_valid(secret: str, raw_body: bytes, header: str | None) -> bool:
    """Check X-Hub-Signature-256 over the raw bytes, in constant time."""
    match = _SIGNATURE.fullmatch((header or "").strip())
    if not match:
        return False
    expected = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match.group(1).lower())


def sign(secret: str, raw_body: bytes) -> str:
    """Return the X-Hub-Signature-256 value Meta would send (for simulators and tests)."""
    return "sha256=" + hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class InboundMessage:
    message_id: str
    wa_id: str
    timestamp: datetime
    inbound: Inbound
    message_type: str


@dataclass(frozen=True)
class StatusUpdate:
    message_id: str
    wa_id: str
    status: str
    timestamp: datetime
    error_codes: tuple[int, ...] = ()


@dataclass
class WebhookBatch:
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)  # codes of top-level `errors` entries
    skipped: int = 0  # parts that were malformed and ignored


def parse_payload(raw_body: bytes) -> WebhookBatch:
    """Parse a signed webhook body; raise InvalidInputError only when it is not JSON at all."""
    try:
        payload = json.loads(raw_body)
    except (ValueError, RecursionError):
        raise InvalidInputError("the webhook body is not JSON") from None
    batch = WebhookBatch()
    for value in _change_values(payload, batch):
        _parse_messages(value, batch)
        _parse_statuses(value, batch)
        for error in _dicts(value.get("errors")):
            code = error.get("code")
            batch.errors.append(code if isinstance(code, int) and 0 <= code < 2**31 else 0)
    return batch


def _dicts(value: Any) -> list[dict]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _change_values(payload: Any, batch: WebhookBatch) -> list[dict]:
    if not isinstance(payload, dict):
        batch.skipped += 1
        return []
    values = []
    for entry in _dicts(payload.get("entry")):
        for change in _dicts(entry.get("changes")):
            value = change.get("value")
            if isinstance(value, dict):
                values.append(value)
            else:
                batch.skipped += 1
    return values


def _timestamp(value: Any) -> datetime | None:
    try:
        seconds = int(value)
        return datetime.fromtimestamp(seconds, UTC) if 0 < seconds < 32503680000 else None
    except (TypeError, ValueError, OverflowError):
        return None


def _parse_messages(value: dict, batch: WebhookBatch) -> None:
    for message in _dicts(value.get("messages")):
        message_id, sender = message.get("id"), message.get("from")
        timestamp = _timestamp(message.get("timestamp"))
        valid = (
            isinstance(message_id, str)
            and _MESSAGE_ID.fullmatch(message_id)
            and isinstance(sender, str)
            and _WA_ID.fullmatch(sender)
            and timestamp
        )
        if not valid:
            batch.skipped += 1
            continue
        kind = message.get("type") if isinstance(message.get("type"), str) else "unknown"
        batch.messages.append(
            InboundMessage(message_id, sender, timestamp, _inbound(kind, message), kind[:40])
        )


def _inbound(kind: str, message: dict) -> Inbound:
    """Reduce a message of any type to what the flow engine reads."""
    if kind == "text":
        body = (
            (message.get("text") or {}).get("body")
            if isinstance(message.get("text"), dict)
            else None
        )
        if isinstance(body, str):
            return Inbound(kind="text", text=body[:_MAX_TEXT])
    if kind == "interactive" and isinstance(message.get("interactive"), dict):
        interactive = message["interactive"]
        reply = (
            interactive.get(interactive.get("type"))
            if isinstance(interactive.get("type"), str)
            else None
        )
        if interactive.get("type") in ("button_reply", "list_reply") and isinstance(reply, dict):
            return _choice(reply.get("id"), reply.get("title"))
    if kind == "button" and isinstance(message.get("button"), dict):
        # A template's quick-reply button: `payload` is the id we gave it, `text` its title.
        button = message["button"]
        return _choice(button.get("payload") or button.get("text"), button.get("text"))
    return Inbound(kind="unsupported")


def _choice(choice_id: Any, title: Any) -> Inbound:
    if not isinstance(choice_id, str) or not choice_id:
        return Inbound(kind="unsupported")
    return Inbound(
        kind="choice", choice_id=choice_id[:256], text=title[:256] if isinstance(title, str) else ""
    )


def _parse_statuses(value: dict, batch: WebhookBatch) -> None:
    for status in _dicts(value.get("statuses")):
        message_id, recipient = status.get("id"), status.get("recipient_id")
        timestamp = _timestamp(status.get("timestamp"))
        name = status.get("status")
        valid = (
            isinstance(message_id, str)
            and _MESSAGE_ID.fullmatch(message_id)
            and isinstance(recipient, str)
            and _WA_ID.fullmatch(recipient)
            and timestamp
            and name in _STATUSES
        )
        if not valid:
            batch.skipped += 1
            continue
        codes = tuple(
            error["code"]
            for error in _dicts(status.get("errors"))
            # Firestore stores 64-bit integers; Meta's codes are far smaller, so anything else
            # is not a code we can act on.
            if isinstance(error.get("code"), int) and 0 <= error["code"] < 2**31
        )
        batch.statuses.append(StatusUpdate(message_id, recipient, name, timestamp, codes))
