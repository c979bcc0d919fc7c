"""What the staff portal reads about conversations and the intake index, without reading
every document: Firestore aggregation queries (`count()`), and small, bounded samples.

Every query here filters or orders on one field only, so Firestore's automatic single-field
indexes serve it: no composite index to create before the portal works.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud import firestore

from repositories.archive.model import INDEX_COLLECTION
from repositories.clients import FIRESTORE_CALL, translated
from repositories.conversations import ConversationRepository
from repositories.identities import CONVERSATIONS
from service.domain.identity import PatientIdentity

# Aggregations run a few at once: each is one round trip, and a dashboard needs a dozen.
_PARALLEL_QUERIES = 6


@dataclass(frozen=True)
class InvitationRow:
    """One invitation as the portal lists it; `identity` is unsealed for masking only."""

    conversation: str  # the conversation's key (a keyed hash, not patient data)
    invited_at: datetime
    invited_by: str | None
    status: str | None
    failed_deliveries: int
    last_error_at: datetime | None
    identity: PatientIdentity | None


@dataclass(frozen=True)
class Count:
    """One count to make: documents of `collection` where `field` `op` `value`."""

    collection: str
    field: str
    op: str
    value: Any


class InsightsRepository:
    """Counts and bounded samples over conversations and the intake index."""

    def __init__(self, client: firestore.Client, conversations: ConversationRepository) -> None:
        self._client = client
        self._conversations = conversations

    def counts(self, wanted: Iterable[Count]) -> list[int]:
        """Return each count, in the order asked; a few aggregation queries at a time."""
        queries = [
            self._client.collection(count.collection).where(
                filter=firestore.FieldFilter(count.field, count.op, count.value)
            )
            for count in wanted
        ]

        def run(query: firestore.Query) -> int:
            # The library's annotations of get() and of its result are off (a list of rows,
            # each a list of aggregations): read it untyped.
            aggregation: Any = query.count(alias="n")
            return int(aggregation.get(**FIRESTORE_CALL)[0][0].value)

        with translated("Firestore"), ThreadPoolExecutor(_PARALLEL_QUERIES) as pool:
            return list(pool.map(run, queries))

    def completion_times(self, since: datetime, limit: int) -> list[float]:
        """Seconds from starting the form to completing it, for the `limit` conversations
        completed most recently since `since` (a bounded sample, newest first)."""
        query = (
            self._client.collection(CONVERSATIONS)
            .where(filter=firestore.FieldFilter("completed_at", ">=", since))
            .order_by("completed_at", direction=firestore.Query.DESCENDING)
            .select(["completed_at", "form_started_at"])
            .limit(limit)
        )
        with translated("Firestore"):
            snapshots = list(query.stream(**FIRESTORE_CALL))
        durations = []
        for snapshot in snapshots:
            data = snapshot.to_dict() or {}
            started, completed = data.get("form_started_at"), data.get("completed_at")
            # A patient who started a new form after completing one has a later start.
            if started is not None and completed is not None and started <= completed:
                durations.append((completed - started).total_seconds())
        return durations

    def invitations(self, limit: int, before: datetime | None = None) -> list[InvitationRow]:
        """The latest invitations (one per patient: a new one replaces the last), newest first."""
        query = self._client.collection(CONVERSATIONS).order_by(
            "invited_at", direction=firestore.Query.DESCENDING
        )
        if before is not None:
            query = query.where(filter=firestore.FieldFilter("invited_at", "<", before))
        with translated("Firestore"):
            snapshots = list(query.limit(limit).stream(**FIRESTORE_CALL))
        return [self._invitation(snapshot) for snapshot in snapshots]

    def _invitation(self, snapshot: firestore.DocumentSnapshot) -> InvitationRow:
        data = snapshot.to_dict() or {}
        last_error = data.get("last_error") or {}
        return InvitationRow(
            conversation=snapshot.id,
            invited_at=data["invited_at"],
            invited_by=data.get("invited_by"),
            status=data.get("status"),
            failed_deliveries=int(data.get("failed_deliveries") or 0),
            last_error_at=last_error.get("at"),
            identity=self._conversations.identity_in(snapshot),
        )


INTAKES = INDEX_COLLECTION
