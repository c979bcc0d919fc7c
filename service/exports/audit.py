"""What every export use case writes to the audit log, and the shape of an export id."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from repositories.audit import AuditEvent
from service.accounts.ratelimit import RequestOrigin
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

    if isinstance(error, ServiceError):
        # Codes and our own messages only: they name parameters and ids, never patient data.
        details = {**details, "reason": error.code, "message": str(error)[:200]}
    elif error is not None:
        details = {**details, "reason": "internal", "message": type(error).__name__}
    components.repos.audit.append(
        AuditEvent(
            action=action,
            outcome=outcome,
            at=datetime.now(UTC),
            actor=actor,
            ip=origin.ip,
            user_agent=origin.user_agent,
            details=details,
        )
    )
