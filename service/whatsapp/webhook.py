"""Meta webhook payloads: signature check and parsing into inbound messages and status updates.

Payload reference: https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components
Parsing is defensive: every field may be missing or of the wrong type, and nothing here raises
for a malformed part; it is skipped and counted, so a well-signed payload always gets 200.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from service.domain.identity import PatientIdentity
from service.domain.turns import Inbound
from service.errors import InvalidInputError

logger = logging.getLogger(__name__)

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_MESSAGE_ID = re.compile(r"[A-Za-z0-9._=:+/-]{1,256}")
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
    identity: PatientIdentity
    timestamp: datetime
    inbound: Inbound
    message_type: str


@dataclass(frozen=True)
class IdentityChange:
    """Meta's `user_changed_number` / `user_changed_user_id` system message: the patient
    known as `previous` is from now on `current`."""

    message_id: str
    previous: PatientIdentity
    current: PatientIdentity
    timestamp: datetime
    kind: str


class DeliveryStatus(StrEnum):
    """What became of a message we sent: the `status` of one of Meta's status updates."""

    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    DELETED = "deleted"
    WARNING = "warning"


@dataclass(frozen=True)
class StatusUpdate:
    message_id: str
    identity: PatientIdentity
    status: DeliveryStatus
    timestamp: datetime
    error_codes: tuple[int, ...] = ()


@dataclass
class WebhookBatch:
    messages: list[InboundMessage] = field(default_factory=list)
    identity_changes: list[IdentityChange] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)  # codes of top-level `errors` entries
    skipped: int = 0  # parts that were malformed and ignored
    not_ours: int = 0  # changes for another phone number or webhook field, acknowledged


def parse_payload(raw_body: bytes, phone_number_id: str | None = None) -> WebhookBatch:
    """Parse a signed webhook body; raise InvalidInputError only when it is not JSON at all.

    With `phone_number_id`, changes addressed to another of the app's numbers are left out
    (counted in `not_ours`), as are changes of any webhook field but `messages`.
    """
    try:
        payload = json.loads(raw_body)
    except (ValueError, RecursionError):
        raise InvalidInputError("the webhook body is not JSON") from None
    batch = WebhookBatch()
    for value in _change_values(payload, batch, phone_number_id):
        _parse_messages(value, batch)
        _parse_statuses(value, batch)
        for error in _dicts(value.get("errors")):
            code = error.get("code")
            batch.errors.append(code if isinstance(code, int) and 0 <= code < 2**31 else 0)
    return batch


def _dicts(value: Any) -> list[dict]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _change_values(payload: Any, batch: WebhookBatch, phone_number_id: str | None) -> list[dict]:
    if not isinstance(payload, dict):
        batch.skipped += 1
        return []
    values = []
    for entry in _dicts(payload.get("entry")):
        for change in _dicts(entry.get("changes")):
            value = change.get("value")
            if not isinstance(value, dict):
                batch.skipped += 1
            elif not _ours(change, value, phone_number_id):
                batch.not_ours += 1
            else:
                values.append(value)
    return values


_reported: set[str] = set()
_reported_lock = threading.Lock()


def _ours(change: dict, value: dict, phone_number_id: str | None) -> bool:
    """Tell whether a change is a `messages` change for our number; say once per process
    what else the app is subscribed to, so an operator can unsubscribe it."""
    field_name = change.get("field")
    if field_name not in (None, "messages"):
        _report_once(f"field:{str(field_name)[:40]}", "webhook field ignored", field_name)
        return False
    metadata = value.get("metadata")
    number = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
    if phone_number_id is not None and number is not None and number != phone_number_id:
        _report_once("number", "messages for another phone number id ignored", None)
        return False
    return True


def _report_once(reason: str, message: str, field_name: object) -> None:
    with _reported_lock:
        if reason in _reported:
            return
        _reported.add(reason)
    extra = {"field": str(field_name)[:40]} if field_name is not None else {}
    logger.warning(message, extra=extra)


def _timestamp(value: Any) -> datetime | None:
    try:
        seconds = int(value)
        return datetime.fromtimestamp(seconds, UTC) if 0 < seconds < 32503680000 else None
    except (TypeError, ValueError, OverflowError):
        return None


def _parse_messages(value: dict, batch: WebhookBatch) -> None:
    contacts = _dicts(value.get("contacts"))
    # Meta sends one contact per sender; with exactly one, it names the sender of a message
    # that does not carry its own identifiers.
    contact = contacts[0] if len(contacts) == 1 else {}
    for message in _dicts(value.get("messages")):
        message_id = message.get("id")
        timestamp = _timestamp(message.get("timestamp"))
        sender = _identity(
            message.get("from", contact.get("wa_id")),
            message.get("from_user_id", contact.get("user_id")),
        )
        valid = isinstance(message_id, str) and _MESSAGE_ID.fullmatch(message_id) and timestamp
        if not valid or sender is None:
            batch.skipped += 1
            continue
        assert isinstance(message_id, str) and timestamp is not None
        message_type = message.get("type")
        kind = message_type if isinstance(message_type, str) else "unknown"
        if kind == "system":
            _parse_system(message, message_id, sender, timestamp, batch)
            continue
        batch.messages.append(
            InboundMessage(message_id, sender, timestamp, _inbound(kind, message), kind[:40])
        )


def _identity(phone: Any, bsuid: Any) -> PatientIdentity | None:
    """Return who sent a message, or None when an identifier is malformed or none is given."""
    try:
        return PatientIdentity(phone=phone, bsuid=bsuid)  # it refuses malformed identifiers
    except ValueError:
        return None


def _parse_system(
    message: dict, message_id: str, sender: PatientIdentity, at: datetime, batch: WebhookBatch
) -> None:
    """Meta announces a new number (`user_changed_number`: system.wa_id is the new one) or a
    new BSUID (`user_changed_user_id`: system.user_id is the new one). Other system messages
    need nothing from us."""
    system = message.get("system")
    if not isinstance(system, dict):
        system = {}
    kind = system.get("type")
    if kind == "user_changed_number":
        current = _identity(system.get("wa_id"), sender.bsuid)
        if current is None or current.phone is None:
            batch.skipped += 1
            return
    elif kind == "user_changed_user_id":
        previous_bsuid = system.get("previous_user_id", sender.bsuid)
        sender = _identity(sender.phone, previous_bsuid) or sender
        current = _identity(sender.phone, system.get("user_id"))
        if current is None or current.bsuid is None:
            batch.skipped += 1
            return
    else:
        return
    batch.identity_changes.append(IdentityChange(message_id, sender, current, at, kind))


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


def _delivery_status(value: Any) -> DeliveryStatus | None:
    try:
        return DeliveryStatus(value)
    except ValueError:
        return None


def _parse_statuses(value: dict, batch: WebhookBatch) -> None:
    for status in _dicts(value.get("statuses")):
        message_id = status.get("id")
        # A message sent to a BSUID reports it in recipient_user_id, and the phone number in
        # recipient_id only when Meta's phone-number rules allow it.
        recipient = _identity(status.get("recipient_id"), status.get("recipient_user_id"))
        timestamp = _timestamp(status.get("timestamp"))
        name = _delivery_status(status.get("status"))
        if not (
            isinstance(message_id, str)
            and _MESSAGE_ID.fullmatch(message_id)
            and recipient is not None
            and timestamp
            and name is not None
        ):
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
