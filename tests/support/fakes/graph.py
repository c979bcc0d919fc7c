"""A fake WhatsApp Cloud API (Graph API) server that tests start on a free local port.

It answers `POST /{version}/{phone_number_id}/messages` the way Meta does, including Meta's
limits and errors, and records every request so tests can assert on what the bot sent.

Statuses and codes (Meta's Cloud API error-code table and Graph API error handling pages):
- missing, wrong or expired token: 401, code 190 (expired adds error_subcode 463), with the
  `WWW-Authenticate` header Graph sends and, like Graph's auth layer, no `error_data`;
- wrong phone number id or an unknown path: 400, code 100, type GraphMethodException (subcode 33
  for an unknown object id), which is what Graph answers for an object it cannot load;
- a body that breaks a limit: 400 with the code from `graph_rules` (100, 131008 or 131009);
- template not approved in that language: 404, code 132001;
- free-form message outside the 24-hour customer-service window: 400, code 131047;
- throughput over `throughput_per_second` in any sliding 1 s window: 429, code 130429;
- pair rate limit: 400, code 131056.

Pair limit numbers are Meta's: one message every 6 s to the same user, bursts of up to 45
allowed, after which the pair is blocked until the borrowed time has passed (45 x 6 s = 270 s).
Both are knobs so tests can use small values.

Meta reports 130429, 131047 and 131056 sometimes synchronously and sometimes only later, in a
`failed` status webhook after a 200. This fake always answers synchronously.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from devtools import graph_rules

SERVICE_WINDOW_SECONDS = 24 * 60 * 60
THROUGHPUT_WINDOW_SECONDS = 1.0
THROTTLED_STATUS = 429
_PATH = re.compile(r"^/(v\d+\.\d+)/([^/?]+)/messages/?(\?.*)?$")
_ANY_LANGUAGE = "*"


class _GraphError(Exception):
    """An error answer; raised inside request handling and turned into the HTTP reply."""

    def __init__(
        self,
        status: int,
        code: int,
        details: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **envelope: Any,
    ) -> None:
        super().__init__(code)
        self.status = status
        self.headers = headers or {}
        trace = secrets.token_urlsafe(16)
        self.body = graph_rules.error_body(code, fbtrace_id=trace, details=details, **envelope)


@dataclass
class _Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class _Fault:
    status: int
    code: int
    retry_after: int | None


@dataclass
class _Pair:
    """Meta's pair limit as a virtual schedule: `due` is when the borrowed time is repaid."""

    due: float
    blocked: bool = False


class FakeGraphApi:
    """Serve a fake Cloud API on 127.0.0.1 that enforces Meta's limits and records requests."""

    def __init__(
        self,
        access_token: str,
        phone_number_id: str,
        *,
        throughput_per_second: int = 80,
        pair_burst: int = 45,
        pair_interval_seconds: float = 6.0,
        enforce_service_window: bool = True,
        approved_templates: Iterable[str] = (),
        version: str = "v21.0",
        clock: Callable[[], float] = time.time,
        latency_seconds: float = 0.0,
    ) -> None:
        if throughput_per_second < 1 or pair_burst < 1 or pair_interval_seconds <= 0:
            raise ValueError("limits must be positive")
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.throughput_per_second = throughput_per_second
        self.pair_burst = pair_burst
        self.pair_interval_seconds = pair_interval_seconds
        self.enforce_service_window = enforce_service_window
        self.version = version
        self._clock = clock
        self.latency_seconds = latency_seconds
        # Approvals are configuration, like the token: reset() keeps them.
        self._templates: dict[str, set[str]] = {
            name: {_ANY_LANGUAGE} for name in approved_templates
        }
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._reset_state()

    # Lifecycle

    def start(self) -> str:
        """Start serving on a free port and return the base URL, version included."""
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), self, self._stopping)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # so stop() returns quickly
            name="fake-graph-api",
            daemon=True,
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving; delayed requests still waiting are answered at once."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeGraphApi:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """Return the URL the bot uses as GRAPH_API_URL."""
        if self._server is None:
            raise RuntimeError("the fake Graph API is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}/{self.version}"

    # Knobs for tests

    def reset(self) -> None:
        """Forget messages, requests, faults, windows and counters; un-expire the token.

        Approved templates stay approved, so a session-wide fake can be reset per test.
        """
        with self._lock:
            self._reset_state()

    def customer_wrote(
        self, wa_id: str | None, at: float | None = None, user_id: str | None = None
    ) -> None:
        """Open (or refresh) the 24-hour customer-service window, as a patient's message does.

        The window belongs to the user, whichever way a reply addresses them: by their phone
        number (`wa_id`) or their business-scoped user id (`user_id`).
        """
        with self._lock:
            moment = self._clock() if at is None else at
            if wa_id is not None:
                self._last_inbound[graph_rules.wa_id_of(wa_id)] = moment
            if user_id is not None:
                self._last_inbound[user_id] = moment

    def approve_template(self, name: str, language: str | None = None) -> None:
        """Mark a template approved in one language, or in every language when none is given."""
        with self._lock:
            self._templates.setdefault(name, set()).add(language or _ANY_LANGUAGE)

    def expire_token(self) -> None:
        """Make the current access token answer 190, as Meta does once a token expires."""
        with self._lock:
            self._token_expired = True

    def fail_next(
        self, n: int, status: int = 500, code: int = 131000, retry_after: int | None = None
    ) -> None:
        """Answer the next n requests with this error; `retry_after` adds a Retry-After header."""
        with self._lock:
            self._faults.extend([_Fault(status, code, retry_after)] * n)

    def set_latency(self, seconds: float) -> None:
        """Answer every request after about `seconds` (+-20 %), as Meta does over the internet.

        Meta's send endpoint takes a few hundred milliseconds from Europe or the Americas,
        more at busy times; the request is processed (and a message accepted) all the same.
        """
        with self._lock:
            self.latency_seconds = seconds

    def delay_next(self, n: int, seconds: float) -> None:
        """Hold the answer to the next n requests; they are still processed, as on a timeout."""
        with self._lock:
            self._delays.extend([seconds] * n)

    # Records

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Return accepted messages: {"wamid", "to", "wa_id", "body", "at", "answered_at"},
        oldest first (`at` when the request came, `answered_at` when it was answered);
        `to` and `wa_id` are None for a message sent to a BSUID (`recipient`)."""
        with self._lock:
            return list(self._messages)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Return every request received, rejected ones included, with the status answered."""
        with self._lock:
            return list(self._requests)

    def messages_to(self, wa_id: str | None, user_id: str | None = None) -> list[dict[str, Any]]:
        """Return the accepted messages sent to one user, by phone number or by BSUID."""
        digits = graph_rules.wa_id_of(wa_id) if wa_id else None
        return [
            message
            for message in self.messages
            if (digits and message["wa_id"] == digits)
            or (user_id and message["recipient"] == user_id)
        ]

    # Request handling

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> _Reply:
        """Decide the answer to one request and record it; called by the HTTP handler."""
        with self._lock:
            now = self._clock()
            delay = self._delays.popleft() if self._delays else 0.0
            if self.latency_seconds:
                delay += self.latency_seconds * random.uniform(0.8, 1.2)
            body = _parse_json(raw)
            try:
                reply = self._answer(method, path, headers, body, now)
            except _GraphError as error:
                reply = _Reply(error.status, error.body, error.headers)
            reply.delay = delay
            if reply.status == 200 and self._messages:
                self._messages[-1]["answered_at"] = now + delay
            self._requests.append(
                {
                    "method": method,
                    "path": path,
                    "headers": headers,
                    "body": body,
                    "raw": raw.decode("utf-8", "replace"),
                    "status": reply.status,
                    "response": reply.body,
                    "at": now,
                }
            )
            return reply

    def _reset_state(self) -> None:
        self._token_expired = False
        self._last_inbound: dict[str, float] = {}
        self._pairs: dict[str, _Pair] = {}
        self._sent_times: deque[float] = deque()
        self._faults: deque[_Fault] = deque()
        self._delays: deque[float] = deque()
        self._messages: list[dict[str, Any]] = []
        self._requests: list[dict[str, Any]] = []
        self._wamid_counter = 0

    def _answer(
        self, method: str, path: str, headers: dict[str, str], body: object, now: float
    ) -> _Reply:
        if self._faults:
            _raise_fault(self._faults.popleft())
        self._check_token(headers)
        self._check_path(method, path)
        violation = graph_rules.first_violation(body)
        if violation is not None:
            raise _GraphError(400, violation.code, violation.details)
        assert isinstance(body, dict)  # first_violation guarantees a JSON object
        wa_id = graph_rules.recipient_of(body)
        if body.get("type", "text") == "template":
            self._check_template(body["template"])
        elif self.enforce_service_window:
            self._check_service_window(wa_id, now)
        self._check_throughput(now)
        self._check_pair(wa_id, now)
        return self._accept(body, wa_id, now)

    def _check_token(self, headers: dict[str, str]) -> None:
        scheme, _, token = _header(headers, "Authorization").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.access_token:
            raise _auth_error("Invalid OAuth access token - Cannot parse access token")
        if self._token_expired:
            raise _auth_error("Error validating access token: Session has expired.", subcode=463)

    def _check_path(self, method: str, path: str) -> None:
        match = _PATH.match(path)
        if match is None or method != "POST":
            raise _GraphError(
                400,
                graph_rules.INVALID_PARAMETER,
                message=f"Unsupported {method.lower()} request.",
                error_type="GraphMethodException",
            )
        if match.group(2) != self.phone_number_id:
            raise _GraphError(
                400,
                graph_rules.INVALID_PARAMETER,
                message=(
                    f"Unsupported post request. Object with ID '{match.group(2)}' does not "
                    "exist, cannot be loaded due to missing permissions, or does not support "
                    "this operation."
                ),
                error_type="GraphMethodException",
                subcode=33,
            )

    def _check_template(self, template: dict[str, Any]) -> None:
        name, language = template["name"], template["language"]["code"]
        languages = self._templates.get(name, set())
        if _ANY_LANGUAGE not in languages and language not in languages:
            raise _GraphError(404, 132001, f"template name ({name}) does not exist in {language}")

    def _check_service_window(self, wa_id: str, now: float) -> None:
        wrote_at = self._last_inbound.get(wa_id)
        if wrote_at is None or not 0 <= now - wrote_at < SERVICE_WINDOW_SECONDS:
            raise _GraphError(400, 131047, graph_rules.ERROR_DETAILS[131047])

    def _check_throughput(self, now: float) -> None:
        while self._sent_times and now - self._sent_times[0] >= THROUGHPUT_WINDOW_SECONDS:
            self._sent_times.popleft()
        if len(self._sent_times) >= self.throughput_per_second:
            raise _GraphError(THROTTLED_STATUS, 130429, graph_rules.ERROR_DETAILS[130429])

    def _check_pair(self, wa_id: str, now: float) -> None:
        pair = self._pairs.setdefault(wa_id, _Pair(due=now))
        if pair.blocked and now < pair.due:
            raise _GraphError(400, 131056, graph_rules.ERROR_DETAILS[131056])
        pair.blocked = False
        due = max(pair.due, now) + self.pair_interval_seconds
        if due - now > self.pair_burst * self.pair_interval_seconds:
            pair.blocked = True
            raise _GraphError(400, 131056, graph_rules.ERROR_DETAILS[131056])
        pair.due = due

    def _accept(self, body: dict[str, Any], wa_id: str, now: float) -> _Reply:
        # Real wamids encode the recipient; these do not, so logging one never leaks a number.
        self._wamid_counter += 1
        wamid = f"wamid.FAKE{self._wamid_counter:06d}{secrets.token_hex(12).upper()}"
        self._sent_times.append(now)
        by_phone = bool(body.get("to"))
        self._messages.append(
            {
                "wamid": wamid,
                "to": body.get("to") or None,
                "wa_id": wa_id if by_phone else None,
                "recipient": body.get("recipient") or None,
                "body": body,
                "at": now,
            }
        )
        return _Reply(200, graph_rules.success_body(body, wamid))


def _auth_error(message: str, subcode: int | None = None) -> _GraphError:
    return _GraphError(
        401,
        190,
        message=message,
        subcode=subcode,
        headers={"WWW-Authenticate": f'OAuth "Facebook Platform" "invalid_token" "{message}"'},
    )


def _raise_fault(fault: _Fault) -> None:
    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
    raise _GraphError(
        fault.status,
        fault.code,
        graph_rules.ERROR_DETAILS.get(fault.code, graph_rules.ERROR_TITLES.get(fault.code)),
        headers=headers,
    )


def _header(headers: dict[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return ""


def _parse_json(raw: bytes) -> object:
    try:
        return json.loads(raw) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops connections under a burst of concurrent sends,
    # and the client's SYN retry then costs a full second.
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], fake: FakeGraphApi, stopping: threading.Event
    ) -> None:
        super().__init__(address, _Handler)
        self.fake = fake
        self.stopping = stopping

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is expected (delay_next); anything else is a bug.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive like Graph, and no Nagle delay: headers and body go out in separate writes,
    # which on a reused connection otherwise cost about 40 ms per request.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        self._serve()

    # Graph answers other methods with an error of its own rather than 501.
    do_GET = do_DELETE = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        # Tests run many requests; Graph access logs on stderr would only be noise.
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        reply = self.server.fake.handle(self.command, self.path, dict(self.headers.items()), raw)
        if reply.delay:
            # Wakes early when the fake stops, so stop() never waits for a long delay.
            self.server.stopping.wait(reply.delay)
        payload = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
