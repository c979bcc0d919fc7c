"""Structured logging: one JSON object per line on stdout, in the shape Cloud Logging reads."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

from flask import has_request_context, request

_TRACE_HEADER = "X-Cloud-Trace-Context"
# A safety net under the explicit masking: any run of 8 or more digits (optionally with a
# leading +) in a log line is treated as a phone number (WhatsApp ids are bare E.164 digits)
# and masked before it is written. Dates and durations never hold such a run.
_PHONE_RUN = re.compile(r"\+?\d{8,}")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def mask_phone(phone: str | None) -> str:
    """Return a phone number with all but its last 4 digits hidden, e.g. '********1234'."""
    digits = re.sub(r"\D", "", phone or "")
    if len(digits) <= 4:
        return "*" * len(digits)
    return "*" * (len(digits) - 4) + digits[-4:]


def _mask_runs(text: str) -> str:
    return _PHONE_RUN.sub(lambda match: mask_phone(match.group()), text)


def _masked(value: object) -> object:
    """Return the value with phone-like digit runs masked in every string, however nested."""
    if isinstance(value, str):
        return _mask_runs(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000_000:
        return _mask_runs(str(value))
    return value if value is None or isinstance(value, bool | int | float) else _masked(str(value))


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line with severity, message, trace and extra fields."""

    def __init__(self, project_id: str | None = None) -> None:
        super().__init__()
        self.project_id = project_id

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        entry = {key: _masked(value) for key, value in entry.items()}
        trace = _trace_id()
        if trace:  # added after masking: a trace id may hold long runs of digits
            entry["logging.googleapis.com/trace"] = (
                f"projects/{self.project_id}/traces/{trace}" if self.project_id else trace
            )
        return json.dumps(entry, default=str, ensure_ascii=False)


def _trace_id() -> str | None:
    if not has_request_context():
        return None
    header = request.headers.get(_TRACE_HEADER, "")
    trace = header.split("/", 1)[0].strip()
    return trace if re.fullmatch(r"[0-9a-fA-F]{16,32}", trace) else None


class _JsonHandler(logging.StreamHandler[TextIO]):
    """The handler configure_logging installs, so a second call replaces it."""


def configure_logging(
    project_id: str | None, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Send every log record to stdout (or `stream`) as JSON; idempotent, tests call it per app."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _JsonHandler):
            root.removeHandler(handler)
    json_handler = _JsonHandler(stream or sys.stdout)
    json_handler.setFormatter(JsonFormatter(project_id))
    root.addHandler(json_handler)
    root.setLevel(level)
    # Client libraries log request URLs and bodies at DEBUG; keep them out even at DEBUG.
    for noisy in ("urllib3", "google", "grpc", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
