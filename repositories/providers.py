"""Provider accounts: `providers/{provider_id}` holding a token hash, never the token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from google.cloud import firestore

from repositories.clients import FIRESTORE_CALL

COLLECTION = "providers"


class Role(StrEnum):
    """What an account may call (service/accounts/providers.py); stored by value in `role`."""

    ADMIN = "admin"
    STAFF = "staff"
    SCHEDULER = "scheduler"


# Accounts created before roles existed are staff. Migration 0003 writes the field; reading a
# missing one the same way keeps those accounts working before it has run.
ROLE_WHEN_MISSING = Role.STAFF


@dataclass(frozen=True)
class Provider:
    provider_id: str
    name: str
    token_hash: str
    created_at: datetime
    revoked_at: datetime | None = None
    role: Role = ROLE_WHEN_MISSING

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class ProviderRepository:
    """Read and write provider accounts."""

    def __init__(self, client: firestore.Client) -> None:
        self._collection = client.collection(COLLECTION)

    def add(self, provider: Provider) -> None:
        self._collection.document(provider.provider_id).create(
            {
                "name": provider.name,
                "token_hash": provider.token_hash,
                "created_at": provider.created_at,
                "revoked_at": provider.revoked_at,
                "role": provider.role,
            }
        )

    def get(self, provider_id: str) -> Provider | None:
        snapshot = self._collection.document(provider_id).get(**FIRESTORE_CALL)
        if not snapshot.exists:
            return None
        return _provider(snapshot.id, snapshot.to_dict() or {})

    def list(self) -> list[Provider]:
        snapshots = self._collection.order_by("created_at").stream()
        return [_provider(snapshot.id, snapshot.to_dict() or {}) for snapshot in snapshots]

    def revoke(self, provider_id: str, revoked_at: datetime) -> bool:
        """Mark the provider revoked; return False when no such provider exists."""
        reference = self._collection.document(provider_id)
        if not reference.get().exists:
            return False
        reference.update({"revoked_at": revoked_at})
        return True

    def fill_missing_roles(self, role: Role) -> int:
        """Give `role` to every account stored without one; return how many were changed."""
        changed = 0
        for snapshot in self._collection.stream():
            if "role" in (snapshot.to_dict() or {}):
                continue
            # Only the missing field is written: a concurrent revoke is kept, and a second
            # run finds nothing to do.
            snapshot.reference.update({"role": role})
            changed += 1
        return changed


def _provider(provider_id: str, data: dict[str, Any]) -> Provider:
    return Provider(
        provider_id=provider_id,
        name=data["name"],
        token_hash=data["token_hash"],
        created_at=data["created_at"],
        revoked_at=data.get("revoked_at"),
        role=data.get("role", ROLE_WHEN_MISSING),
    )
