"""The outbox: lease queued replies to one sender, and settle what each send did."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from google.api_core.exceptions import (
    NotFound,
)
from google.cloud import firestore

from repositories.clients import translated
from repositories.conversations.model import (
    CALL,
    SENT_KEPT,
    Change,
    Claim,
    OutboxItem,
    SendResult,
    claim_replies,
    count_drops,
)
from repositories.conversations.store import ConversationStore
from repositories.identities import Located


class OutboxChanges(ConversationStore):
    """Lease and settle a conversation's queued replies."""

    def claim_outbox(
        self, key: str, now: datetime, lease: timedelta, holder: str | None = None
    ) -> Claim:
        """Lease the unsent replies so one process sends them while others skip them
        (`holder`: see claim_replies)."""
        reference = self._collection.document(key)

        def attempt(located: Located) -> tuple[Claim, Change | None]:
            if not located.snapshot.exists:
                return Claim(key, None), None
            data = located.snapshot.to_dict() or {}
            outbox = data.get("outbox", [])
            leased = claim_replies(outbox, now, lease, holder)
            change = Change({"outbox": outbox, "outbox_pending": len(outbox)})
            claim = self._claim(key, self._sealed_identity(located.snapshot), leased, data)
            return claim, change if leased.items else None

        return self._read_modify_write(lambda: Located(key, reference.get(**CALL)), attempt)

    def settle_outbox(
        self, key: str, now: datetime, items: list[OutboxItem], results: list[SendResult]
    ) -> None:
        """Record a round of sends: acknowledged (wamid) and dropped replies leave the outbox;
        the others are released for a later attempt."""
        if not results:
            return
        if all(result.wamid or result.drop for result in results):
            self._remove_settled(key, items, results, now)
        else:
            self._settle_conditionally(key, now, results)

    def _remove_settled(
        self, key: str, items: list[OutboxItem], results: list[SendResult], now: datetime
    ) -> None:
        """One plain write instead of a read-decide-commit: remove the exact items we leased.

        An item changed meanwhile (re-leased after its lease ran out) is simply not removed;
        the count is recomputed by the next read-decide-commit on the document.
        """
        settled = {result.key for result in results}
        removed = [item.stored for item in items if item.key in settled]
        changes: dict[str, Any] = {
            "outbox": firestore.ArrayRemove(removed),
            "outbox_pending": firestore.Increment(-len(removed)),
            "updated_at": now,
        }
        acknowledged = [{"key": r.key, "wamid": r.wamid} for r in results if r.wamid]
        if acknowledged:
            changes["sent"] = firestore.ArrayUnion(acknowledged)
        errors = [result.error_code for result in results if result.error_code is not None]
        if errors:
            changes["last_error"] = {"code": errors[-1], "at": now, "source": "send"}
        dropped = [result for result in results if result.drop]
        if dropped:
            changes["dropped_replies"] = firestore.Increment(len(dropped))
            changes["last_drop"] = {"reason": dropped[-1].reason, "at": now}
        with translated("Firestore"):
            try:
                self._collection.document(key).update(changes)
            except NotFound:
                pass  # moved or erased meanwhile: nothing of it is left to settle here

    def _settle_conditionally(self, key: str, now: datetime, results: list[SendResult]) -> None:
        reference = self._collection.document(key)
        by_key = {result.key: result for result in results}

        def attempt(located: Located) -> tuple[None, Change | None]:
            snapshot = located.snapshot
            if not snapshot.exists:
                return None, None
            data = snapshot.to_dict() or {}
            outbox, sent = [], list(data.get("sent", []))
            changes: dict[str, Any] = {}
            for item in data.get("outbox", []):
                result = by_key.get(item["key"])
                if result is None:
                    outbox.append(item)
                elif result.wamid:
                    sent.append({"key": item["key"], "wamid": result.wamid})
                elif result.drop:
                    count_drops(changes, 1, result.reason, now, data)
                else:
                    tried = item.get("attempts", 0) + (1 if result.attempted else 0)
                    outbox.append(
                        {**item, "claimed_until": None, "claimed_by": None, "attempts": tried}
                    )
            changes.update(
                {"outbox": outbox, "outbox_pending": len(outbox), "sent": sent[-SENT_KEPT:]}
            )
            errors = [result.error_code for result in results if result.error_code is not None]
            if errors:
                changes["last_error"] = {"code": errors[-1], "at": now, "source": "send"}
            return None, Change(changes)

        self._read_modify_write(lambda: Located(key, reference.get(**CALL)), attempt)
