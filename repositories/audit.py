"""Append-only audit log: `audit_events/{auto}`. Who, what, when, from where; never PHI."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.cloud import firestore

from repositories.clients import FIRESTORE_CALL, translated

COLLECTION = "audit_events"


@dataclass(frozen=True)
class AuditEvent:
    action: str
    outcome: str
    at: datetime
    actor: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    details: dict[str, object] = field(default_factory=dict)


class AuditRepository:
    """Append audit events and read them back (for tests and investigations)."""

    def __init__(self, client: firestore.Client) -> None:
        self._collection = client.collection(COLLECTION)

    def append(self, event: AuditEvent) -> None:
        self._collection.add(
            {
                "action": event.action,
                "outcome": event.outcome,
                "at": event.at,
                "actor": event.actor,
                "ip": event.ip,
                "user_agent": event.user_agent,
                "details": event.details,
            },
            **FIRESTORE_CALL,
        )

    def list(self, action: str | None = None, limit: int = 1000) -> list[AuditEvent]:
        query = self._collection.limit(limit)
        if action is not None:
            query = query.where(filter=firestore.FieldFilter("action", "==", action))
        events = [_event(snapshot.to_dict() or {}) for snapshot in query.stream()]
        return sorted(events, key=lambda event: event.at)

    def newest(
        self, start: datetime | None = None, end: datetime | None = None, limit: int = 1000
    ) -> builtins.list[AuditEvent]:
        """Events with start <= at < end, newest first, at most `limit` of them.

        One field filtered and ordered: Firestore's single-field index serves it. The portal
        filters who, what and outcome among these (a bounded scan; see docs/portal.md).
        """
        query = self._collection.order_by("at", direction=firestore.Query.DESCENDING)
        if start is not None:
            query = query.where(filter=firestore.FieldFilter("at", ">=", start))
        if end is not None:
            query = query.where(filter=firestore.FieldFilter("at", "<", end))
        with translated("Firestore"):
            snapshots = list(query.limit(limit).stream(**FIRESTORE_CALL))
        return [_event(snapshot.to_dict() or {}) for snapshot in snapshots]


def _event(data: dict[str, Any]) -> AuditEvent:
    return AuditEvent(
        action=data["action"],
        outcome=data["outcome"],
        at=data["at"],
        actor=data.get("actor"),
        ip=data.get("ip"),
        user_agent=data.get("user_agent"),
        details=data.get("details") or {},
    )
