"""The local WhatsApp simulator behind /dev/chat (development and tests only).

Everything here lives in the memory of one process; `make run` serves one gunicorn worker, so
the chat page, the fake Graph endpoint and the webhook all meet in it.

- `GraphInbox` (service/dev_graph.py) is the fake Graph endpoint's memory: Meta's checks, and
  the accepted messages per patient for the chat page.
- The patient's side builds a Meta-shaped webhook payload, signs it with the app secret and
  posts it to this service's own webhook over HTTP, so the signature check, the transaction,
  the outbox and the sending all run exactly as they do for Meta.
- The support view is the conversation's plain fields only; the provider view calls the
  provider endpoints over HTTP with a development provider's token that never leaves this
  process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import phonenumbers
import requests

from service import payloads
from service.components import Components
from service.config import Config
from service.conversation import normalise_phone
from service.dev_graph import GraphInbox
from service.errors import InvalidInputError, NotFoundError, UnavailableError
from service.identity import PatientIdentity
from service.providers import create_provider
from service.support import find_conversation
from service.webhook import sign

# What support staff read in the Firestore console; the draft and the outbox are never shown.
WEBHOOK_PATH = "/getIncomingMessages"
DEV_PROVIDER_NAME = "Simulator (development)"
MAX_PATIENT_TEXT = 4096
MAX_CHOICE_ID = 256
MAX_CHOICE_TITLE = 100
REPLY_KINDS = ("button_reply", "list_reply")
_SELF_CALL_TIMEOUT = 30.0
_EXPORT_TIMEOUT = 300.0


class Simulator:
    """The per-process state of the dev tools: the inbox and the development provider token."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.inbox = GraphInbox(clock)
        self._lock = threading.Lock()
        self._provider_token: str | None = None

    def provider_token(self, components: Components) -> str:
        """Return the simulator's provider token, creating the provider on first use."""
        with self._lock:
            if self._provider_token is None:
                created = create_provider(components.repos.providers, DEV_PROVIDER_NAME)
                self._provider_token = created.token
            return self._provider_token

    def forget_provider_token(self, token: str) -> None:
        """Drop a token the service refused (the emulator's data was cleared meanwhile)."""
        with self._lock:
            if self._provider_token == token:
                self._provider_token = None


def patient_wa_id(phone: object) -> str:
    """Return the WhatsApp id of a typed phone number, or raise 400 saying what is expected."""
    try:
        return normalise_phone(phone)
    except InvalidInputError:
        raise InvalidInputError(
            "the patient number must be a valid phone number in international format, "
            "for example +34 612 345 678"
        ) from None


def patient_display(wa_id: str) -> str:
    """Format a WhatsApp id the way a person writes the number: +34 612 34 56 78."""
    number = phonenumbers.parse(f"+{wa_id}", None)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def patient_message(request_body: object) -> dict[str, Any]:
    """Turn the page's {"text"} or {"reply": {"type", "id", "title"}} into a Meta message."""
    body = request_body if isinstance(request_body, dict) else {}
    reply, text = body.get("reply"), body.get("text")
    if isinstance(reply, dict):
        kind, choice_id, title = reply.get("type"), reply.get("id"), reply.get("title")
        if kind not in REPLY_KINDS:
            raise InvalidInputError("reply.type must be button_reply or list_reply")
        if not isinstance(choice_id, str) or not 1 <= len(choice_id) <= MAX_CHOICE_ID:
            raise InvalidInputError(f"reply.id must be 1 to {MAX_CHOICE_ID} characters")
        if not isinstance(title, str) or len(title) > MAX_CHOICE_TITLE:
            raise InvalidInputError(f"reply.title must be at most {MAX_CHOICE_TITLE} characters")
        build = payloads.button_reply if kind == "button_reply" else payloads.list_reply
        return build(choice_id, title or choice_id)
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError('send {"text": "..."} or {"reply": {"type", "id", "title"}}')
    if len(text) > MAX_PATIENT_TEXT:
        raise InvalidInputError(f"a message is at most {MAX_PATIENT_TEXT} characters")
    return payloads.text_message(text)


def send_patient_message(
    components: Components, simulator: Simulator, base_url: str, wa_id: str, message: dict
) -> dict[str, Any]:
    """Post a patient's message to the service's own webhook, signed as Meta signs it."""
    entry = simulator.inbox.record_patient(wa_id, message)
    config = components.config
    payload = payloads.envelope(
        [payloads.message_value(wa_id, message, profile_name="Simulated patient")],
        config.whatsapp_phone_number_id,
    )
    status = _post_webhook(config, base_url, payload)
    return simulator.inbox.settle_patient(wa_id, entry["seq"], status) or entry


def post_statuses(
    components: Components,
    simulator: Simulator,
    base_url: str,
    wa_id: str,
    wamids: list[str],
    status: str,
) -> dict[str, Any]:
    """Post `delivered` or `read` updates for bot messages through the signed webhook."""
    if status not in ("delivered", "read"):
        raise InvalidInputError("status must be delivered or read")
    known = simulator.inbox.statuses(wa_id)
    wamids = [wamid for wamid in wamids if isinstance(wamid, str) and wamid in known]
    if not wamids:
        return {"updated": 0, "webhook_status": None}
    values = [payloads.status_value(wa_id, wamid, status) for wamid in wamids]
    config = components.config
    webhook_status = _post_webhook(
        config, base_url, payloads.envelope(values, config.whatsapp_phone_number_id)
    )
    updated = simulator.inbox.mark(wa_id, wamids, status) if webhook_status == 200 else 0
    return {"updated": updated, "webhook_status": webhook_status}


def _post_webhook(config: Config, base_url: str, payload: dict[str, Any]) -> int:
    raw = payloads.encode(payload)
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": sign(config.whatsapp_app_secret, raw),
    }
    try:
        response = requests.post(
            f"{base_url}{WEBHOOK_PATH}", data=raw, headers=headers, timeout=_SELF_CALL_TIMEOUT
        )
    except requests.RequestException as error:
        raise UnavailableError(
            f"the service's own webhook at {base_url} did not answer ({type(error).__name__})"
        ) from None
    return response.status_code


def support_view(components: Components, wa_id: str) -> dict[str, Any]:
    """Return what support staff see of a conversation: plain fields, never the answers."""
    try:
        found = find_conversation(components, PatientIdentity(phone=wa_id))
    except NotFoundError:
        return {"exists": False, "fields": {}}
    return {"exists": True, **found}


def call_provider_endpoint(
    components: Components,
    simulator: Simulator,
    base_url: str,
    path: str,
    params: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """GET a provider endpoint of this service with the simulator's token; return its answer."""
    token = simulator.provider_token(components)
    status, body = _get(f"{base_url}{path}", params, token)
    if status == 401:
        # The emulator's data was cleared under a running service: make a new provider once.
        simulator.forget_provider_token(token)
        status, body = _get(f"{base_url}{path}", params, simulator.provider_token(components))
    return status, body


def _get(url: str, params: dict[str, str] | None, token: str) -> tuple[int, dict[str, Any]]:
    try:
        response = requests.get(
            url,
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=_EXPORT_TIMEOUT,
        )
    except requests.RequestException as error:
        raise UnavailableError(f"the service did not answer ({type(error).__name__})") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"error": {"code": "invalid_response", "message": "the answer was not JSON"}}
    return response.status_code, body
