"""The WhatsApp Cloud (Graph) API client: one pooled session, timeouts, typed errors, retries.

Error codes: https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

if TYPE_CHECKING:
    from service.domain.identity import PatientIdentity
    from service.domain.turns import Reply

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 3.05
_READ_TIMEOUT = 10.0
_MAX_ATTEMPTS = 3
_MAX_RETRY_AFTER = 5.0  # longer waits are left to the outbox retry, not held in a request


class GraphError(Exception):
    """The Graph API refused or failed a request; never carries the message body or token."""

    retryable = False

    def __init__(self, message: str, code: int | None = None, status: int | None = None) -> None:
        self.code = code
        self.status = status
        super().__init__(message)


class TokenExpiredError(GraphError):
    """Error 190: the access token expired or was revoked; an operator must replace it."""


class OutsideWindowError(GraphError):
    """Error 131047: more than 24 h since the patient wrote; only a template may be sent."""


class ThrottledError(GraphError):
    """Rate limits (4, 17, 341, 130429, 131056): retry later with backoff."""

    retryable = True

    def __init__(
        self, message: str, code: int | None, status: int | None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code, status)
        self.retry_after = retry_after


class TemporaryGraphError(GraphError):
    """Codes 1, 2, 131000, 5xx, timeouts, connection errors: worth another attempt."""

    retryable = True


class UncertainDeliveryError(TemporaryGraphError):
    """No answer after the request went out (a read timeout, a dropped connection): Meta may
    have taken the message. Meta has no idempotency key, so it is not retried within the send;
    the outbox retries it later (at least once, never a burst of copies)."""


class RejectedMessageError(GraphError):
    """Anything else (invalid parameter, unknown template): retrying would fail the same way."""


_THROTTLE_CODES = {4, 17, 32, 341, 613, 80007, 130429, 131048, 131056}
_TEMPORARY_CODES = {1, 2, 131000, 131016}


@dataclass(frozen=True)
class SentMessage:
    wamid: str


def addressed(payload: dict[str, Any], identity: PatientIdentity) -> dict[str, Any]:
    """Return a message body addressed to a patient: `to` (the phone number) when we know it,
    else `recipient` (the BSUID).

    Meta accepts both together but then uses the phone number, so a phone is sent alone; a
    patient who hides their number is reached through their BSUID. Any address the body held
    before (replies queued before migration 0003 carry `to`) is replaced: the conversation's
    identity is the current one, after a changed number too.
    """
    body = {key: value for key, value in payload.items() if key not in ("to", "recipient")}
    if identity.phone:
        return {**body, "to": identity.phone}
    return {**body, "recipient": identity.bsuid}


def reply_payload(reply: Reply) -> dict[str, Any]:
    """Build the Graph API message body for one engine reply, without its recipient."""
    base: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual"}
    if reply.buttons:
        action: dict[str, Any] = {
            "buttons": [
                {"type": "reply", "reply": {"id": button.id, "title": button.title}}
                for button in reply.buttons
            ]
        }
        return {
            **base,
            "type": "interactive",
            "interactive": {"type": "button", "body": {"text": reply.body}, "action": action},
        }
    if reply.rows:
        rows = [
            {
                "id": row.id,
                "title": row.title,
                **({"description": row.description} if row.description else {}),
            }
            for row in reply.rows
        ]
        action = {
            "button": reply.list_button,
            "sections": [{"title": reply.list_button[:24], "rows": rows}],
        }
        return {
            **base,
            "type": "interactive",
            "interactive": {"type": "list", "body": {"text": reply.body}, "action": action},
        }
    return {**base, "type": "text", "text": {"body": reply.body, "preview_url": False}}


def template_payload(
    identity: PatientIdentity, template: str, language: str = "en"
) -> dict[str, Any]:
    """Build a template message for a patient (the only kind outside the 24-hour window)."""
    return addressed(template_message(template, language), identity)


def template_message(
    template: str, language: str = "en", button_payload: str | None = None
) -> dict[str, Any]:
    """Build a template message without its recipient (queued, addressed when sent).

    `button_payload` fills the template's first quick-reply button: the patient's tap comes
    back in the webhook as a `button` message carrying it.
    """
    body: dict[str, Any] = {"name": template, "language": {"code": language}}
    if button_payload is not None:
        body["components"] = [
            {
                "type": "button",
                "sub_type": "quick_reply",
                "index": "0",
                "parameters": [{"type": "payload", "payload": button_payload}],
            }
        ]
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "type": "template",
        "template": body,
    }


class GraphClient:
    """Send messages through the Graph API with retries for temporary failures."""

    def __init__(
        self, base_url: str, phone_number_id: str, access_token: str, connections: int = 32
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/{phone_number_id}/messages"
        self._token = access_token
        self._session = requests.Session()
        # One kept-alive connection per thread that may send at once (the sender's threads
        # and requests sending invitations): beyond the pool, connections are not reused.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=connections)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._lock = threading.Lock()
        self.token_expired = False

    def send(self, payload: dict[str, Any]) -> SentMessage:
        """Send one message; retry throttling and temporary errors a few times, briefly."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._post(payload)
            except UncertainDeliveryError:
                raise
            except (ThrottledError, TemporaryGraphError) as error:
                retry_after = getattr(error, "retry_after", None)
                if attempt >= _MAX_ATTEMPTS or (retry_after or 0) > _MAX_RETRY_AFTER:
                    raise
                time.sleep(_backoff(attempt, retry_after))

    def _post(self, payload: dict[str, Any]) -> SentMessage:
        try:
            response = self._session.post(
                self._url,
                json=payload,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=(_CONNECT_TIMEOUT, _READ_TIMEOUT),
            )
        except requests.ConnectTimeout:
            raise TemporaryGraphError("Graph API did not accept the connection") from None
        except requests.ConnectionError as error:
            if _never_sent(error):
                raise TemporaryGraphError("Graph API unreachable") from None
            raise UncertainDeliveryError("Graph API dropped the connection", None, None) from None
        except requests.RequestException as error:  # a read timeout, among others
            raise UncertainDeliveryError(
                f"Graph API did not answer ({type(error).__name__})", None, None
            ) from None
        if response.status_code == 200:
            if self.token_expired:
                with self._lock:
                    self.token_expired = False
            return SentMessage(wamid=_wamid(response))
        raise self._error(response, payload)

    def _error(self, response: requests.Response, payload: dict[str, Any]) -> GraphError:
        try:
            error = response.json().get("error", {})
        except ValueError:
            error = {}
        code = error.get("code")
        status = response.status_code
        description = f"Graph API error {code} (HTTP {status}) {error.get('message', '')[:120]}"
        logger.warning(
            "Graph API refused a message",
            extra={
                "graph_code": code,
                "http_status": status,
                "addressed_by": "phone" if payload.get("to") else "bsuid",
            },
        )
        if code == 190:
            with self._lock:
                self.token_expired = True
            logger.error("Graph API access token expired or revoked: replace META_ACCESS_TOKEN")
            return TokenExpiredError(description, code, status)
        if code == 131047:
            return OutsideWindowError(description, code, status)
        if code in _THROTTLE_CODES or status == 429:
            return ThrottledError(description, code, status, _retry_after(response))
        if code in _TEMPORARY_CODES or status >= 500:
            return TemporaryGraphError(description, code, status)
        return RejectedMessageError(description, code, status)

    def ready(self) -> str | None:
        """Return a reason when the last Graph answer said the token expired."""
        return "access token expired (error 190)" if self.token_expired else None


def _wamid(response: requests.Response) -> str:
    """The message id of a 200; Meta accepted the message even if the body is odd, so sending
    it again would duplicate it."""
    try:
        wamid = response.json()["messages"][0]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        wamid = None
    if not isinstance(wamid, str):
        logger.warning("Graph API accepted a message without a readable id")
        return "unknown"
    return wamid


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _never_sent(error: requests.ConnectionError) -> bool:
    """Tell whether the connection failed before the request could be sent."""
    reason = error.args[0] if error.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return retry_after
    # Exponential backoff with full jitter, as Meta asks for throttled requests.
    return random.uniform(0, min(2.0, 0.2 * 2**attempt))
