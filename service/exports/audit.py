"""What every export use case writes to the audit log, and the shape of an export id."""

from __future__ import annotations

import re
from typing import Any

from service.accounts.ratelimit import RequestOrigin, audit_request
from service.errors import (
    ServiceError,
)
from service.exports.ports import ExportDeps

EXPORT_ID = re.compile(r"[0-9a-f]{32}")


def audit_export_event(
    components: ExportDeps,
    action: str,
    outcome: str,
    actor: str | None,
    origin: RequestOrigin,
    details: dict[str, Any],
    error: Exception | None = None,
) -> None:
    """Audit an export action; a failure names its error's code, never its patient data."""
    if isinstance(error, ServiceError):
        # Codes and our own messages only: they name parameters and ids, never patient data.
        details = {**details, "reason": error.code, "message": str(error)[:200]}
    elif error is not None:
        details = {**details, "reason": "internal", "message": type(error).__name__}
    audit_request(components.repos.audit, action, outcome, actor, origin, details)
