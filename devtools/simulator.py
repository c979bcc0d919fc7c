"""The local WhatsApp simulator behind /dev/chat (development and tests only).

Everything here lives in the memory of one process; `make run` serves one gunicorn worker, so
the chat page, the fake Graph endpoint and the webhook all meet in it.

- `GraphInbox` (devtools/dev_graph.py) is the fake Graph endpoint's memory: Meta's checks, and
  the accepted messages per patient for the chat page.
- The patient's side builds a Meta-shaped webhook payload, signs it with the app secret and
  posts it to this service's own webhook over HTTP, so the signature check, the conditional commit,
  the outbox and the sending all run exactly as they do for Meta.
- A simulated patient is a phone number with a BSUID derived from it (`SimulatedPatient`).
  Their messages carry both, as Meta's do since 2026, or only the BSUID and a username when
  the patient hides their number; the service then answers them by `recipient`.
- The support view is the conversation's plain fields only; the provider view calls the
  provider endpoints over HTTP with a development provider's token that never leaves this
  process.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import phonenumbers
import requests

from devtools import payloads
from devtools.dev_graph import GraphInbox
from service.accounts.providers import create_provider
from service.conversation.invitations import normalise_phone
from service.conversation.reminders import send_reminders
from service.conversation.support import find_conversation
from service.domain.identity import PatientIdentity
from service.errors import InvalidInputError, NotFoundError, UnavailableError
from service.shell.components import Components
from service.shell.config import Config
from service.whatsapp.webhook import sign

# What support staff read in the Firestore console; the draft and the outbox are never shown.
WEBHOOK_PATH = "/getIncomingMessages"
DEV_PROVIDER_NAME = "Simulator (development)"
MAX_PATIENT_TEXT = 4096
MAX_CHOICE_ID = 256
MAX_CHOICE_TITLE = 100
REPLY_KINDS = ("button_reply", "list_reply")
_SELF_CALL_TIMEOUT = 30.0
_EXPORT_TIMEOUT = 300.0
# Salts the hash a simulated BSUID is derived from; changing it renames every simulated patient.
_BSUID_SALT = b"intake-simulator-bsuid:"
_BSUID_REGION_FALLBACK = "US"
_REGION = re.compile(r"[A-Z]{2}")  # a BSUID starts with an ISO 3166 country code
MAX_CLOCK_STEP = 72  # hours the simulated clock may move at once


class Simulator:
    """The per-process state of the dev tools: the inbox, the development provider token, and
    how far the simulated clock runs ahead of the real one (to show reminders)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._offset = 0.0
        self.inbox = GraphInbox(self.now)
        self._lock = threading.Lock()
        self._provider_token: str | None = None

    def now(self) -> float:
        """The simulated time (seconds since the epoch): the real clock plus the offset."""
        return self._clock() + self._offset

    @property
    def offset_seconds(self) -> float:
        return self._offset

    def advance(self, seconds: float) -> None:
        """Move the simulated clock forward: patients' messages and the fake Graph API's
        24-hour window follow it. Only here: the service's own clock never moves."""
        with self._lock:
            self._offset += seconds

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


def hides_number(value: object) -> bool:
    """Read the page's hide_number flag: a JSON boolean, or "1"/"0" in a query string."""
    if value is None or value is False or value == "0":
        return False
    if value is True or value == "1":
        return True
    raise InvalidInputError("hide_number must be true or false (1 or 0 in a query string)")


@dataclass(frozen=True, repr=False)
class SimulatedPatient:
    """A simulated WhatsApp user: a phone number, the BSUID and username Meta would give a
    business for it, and whether they write under that username with their number hidden."""

    wa_id: str
    hides_number: bool = False

    def __repr__(self) -> str:  # never the number: reprs end up in logs and tracebacks
        return f"SimulatedPatient(<phone>, hides_number={self.hides_number})"

    @property
    def bsuid(self) -> str:
        """Return the patient's BSUID: their number's region, a dot and 16 digits hashed from
        the number, so a simulated person keeps it across page loads and restarts."""
        number = phonenumbers.parse(f"+{self.wa_id}", None)
        region = phonenumbers.region_code_for_number(number) or ""
        # "001" names a non-geographic number (+800, +882…), "ZZ" an unknown region.
        if region == phonenumbers.UNKNOWN_REGION or not _REGION.fullmatch(region):
            region = _BSUID_REGION_FALLBACK
        digits = 10**15 + int.from_bytes(self._digest[:8], "big") % (9 * 10**15)
        return f"{region}.{digits}"

    @property
    def username(self) -> str:
        """Return the username the patient writes under, from a hash: it gives nothing of the
        number away."""
        return "patient_" + base64.b32encode(self._digest[8:13]).decode().lower()

    @property
    def identity(self) -> PatientIdentity:
        """Return who the webhook is told wrote: the BSUID, and the phone unless hidden."""
        phone = None if self.hides_number else self.wa_id
        return PatientIdentity(phone=phone, bsuid=self.bsuid)

    @property
    def _digest(self) -> bytes:
        return hashlib.sha256(_BSUID_SALT + self.wa_id.encode()).digest()

    def describe(self) -> dict[str, str]:
        """Return what the page shows of this patient, and the key it names them by."""
        return {
            "wa_id": self.wa_id,
            "display": patient_display(self.wa_id),
            "user_id": self.bsuid,
            "username": self.username,
        }


def simulated_patient(phone: object, hide_number: object = None) -> SimulatedPatient:
    """Return the simulated patient of a typed number, hiding it when the page asks to."""
    return SimulatedPatient(patient_wa_id(phone), hides_number(hide_number))


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
    components: Components,
    simulator: Simulator,
    base_url: str,
    patient: SimulatedPatient,
    message: dict,
) -> dict[str, Any]:
    """Post a patient's message to the service's own webhook, signed as Meta signs it."""
    # Meta knows the number behind a username: its chat and window are the phone's.
    message = {**message, "timestamp": str(int(simulator.now()))}  # on the simulated clock
    entry = simulator.inbox.record_patient(patient.wa_id, message, user_id=patient.bsuid)
    config = components.config
    payload = payloads.envelope(
        [patient_message_value(patient, message)], config.whatsapp_phone_number_id
    )
    status = _post_webhook(config, base_url, payload)
    return simulator.inbox.settle_patient(patient.wa_id, entry["seq"], status) or entry


def patient_message_value(patient: SimulatedPatient, message: dict[str, Any]) -> dict[str, Any]:
    """Return the `messages` change Meta sends for this patient's message: phone and BSUID,
    or only the BSUID and the username when the patient hides their number."""
    hidden = patient.hides_number
    return payloads.message_value(
        None if hidden else patient.wa_id,
        message,
        profile_name="Simulated patient",
        user_id=patient.bsuid,
        username=patient.username if hidden else None,
    )


def post_statuses(
    components: Components,
    simulator: Simulator,
    base_url: str,
    patient: SimulatedPatient,
    wamids: list[str],
    status: str,
) -> dict[str, Any]:
    """Post `delivered` or `read` updates for bot messages through the signed webhook.

    Each names the recipient by BSUID (recipient_user_id) and, unless the patient hides their
    number, by phone (recipient_id) too.
    """
    if status not in ("delivered", "read"):
        raise InvalidInputError("status must be delivered or read")
    known = simulator.inbox.statuses(patient.wa_id)
    wamids = [wamid for wamid in wamids if isinstance(wamid, str) and wamid in known]
    if not wamids:
        return {"updated": 0, "webhook_status": None}
    phone = None if patient.hides_number else patient.wa_id
    values = [
        payloads.status_value(phone, wamid, status, user_id=patient.bsuid) for wamid in wamids
    ]
    config = components.config
    webhook_status = _post_webhook(
        config, base_url, payloads.envelope(values, config.whatsapp_phone_number_id)
    )
    updated = simulator.inbox.mark(patient.wa_id, wamids, status) if webhook_status == 200 else 0
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


def advance_clock(components: Components, simulator: Simulator, hours: object) -> dict[str, Any]:
    """Move the simulated clock forward and run the reminder task at the new time, as Cloud
    Scheduler would; return the simulated time and what the run did."""
    if not isinstance(hours, int) or isinstance(hours, bool) or not 1 <= hours <= MAX_CLOCK_STEP:
        raise InvalidInputError(f"hours must be a whole number from 1 to {MAX_CLOCK_STEP}")
    simulator.advance(hours * 3600)
    now = datetime.fromtimestamp(simulator.now(), UTC)
    report = send_reminders(components, now)
    return {**clock_view(simulator), "reminders": asdict(report)}


def clock_view(simulator: Simulator) -> dict[str, Any]:
    """The simulated time and how far ahead of the real clock it runs."""
    return {
        "now": datetime.fromtimestamp(simulator.now(), UTC).isoformat(),
        "ahead_hours": round(simulator.offset_seconds / 3600, 2),
    }


def support_view(components: Components, patient: SimulatedPatient) -> dict[str, Any]:
    """Return what support staff see of a conversation: plain fields, never the answers.

    The conversation is looked up as the service knows the patient: by BSUID and phone, or
    by BSUID alone for a patient who hides their number.
    """
    try:
        found = find_conversation(components, patient.identity)
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
