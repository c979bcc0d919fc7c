"""Provider accounts: `providers/{provider_id}` holding a token hash, never the token.

People's accounts (admin, staff) also have an email, the name they sign in to the portal by.
`account_emails/{email}` claims an address for one account: created with the account in one
batch, so two accounts can never share an email, and released when the account is revoked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from google.api_core.exceptions import AlreadyExists, NotFound
from google.cloud import firestore

from repositories.clients import FIRESTORE_CALL, translated
from service.errors import ConflictError

COLLECTION = "providers"
EMAILS = "account_emails"


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
    email: str | None = None  # lower case; None for the scheduler and accounts made before it

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class ProviderRepository:
    """Read and write provider accounts."""

    def __init__(self, client: firestore.Client) -> None:
        self._client = client
        self._collection = client.collection(COLLECTION)
        self._emails = client.collection(EMAILS)

    def add(self, provider: Provider) -> None:
        """Store a new account; raise ConflictError when its email belongs to another."""
        fields = {
            "name": provider.name,
            "token_hash": provider.token_hash,
            "created_at": provider.created_at,
            "revoked_at": provider.revoked_at,
            "role": provider.role,
            "email": provider.email,
        }
        batch = self._client.batch()
        batch.create(self._collection.document(provider.provider_id), fields)
        if provider.email is not None:
            batch.create(
                self._emails.document(provider.email), {"provider_id": provider.provider_id}
            )
        with translated("Firestore"):
            try:
                batch.commit(**FIRESTORE_CALL)
            except AlreadyExists:
                raise ConflictError("an account with this email exists already") from None

    def by_email(self, email: str) -> Provider | None:
        """Return the account an email is claimed by, or None."""
        with translated("Firestore"):
            claim = self._emails.document(email).get(**FIRESTORE_CALL)
        if not claim.exists:
            return None
        return self.get((claim.to_dict() or {})["provider_id"])

    def get(self, provider_id: str) -> Provider | None:
        with translated("Firestore"):
            snapshot = self._collection.document(provider_id).get(**FIRESTORE_CALL)
        if not snapshot.exists:
            return None
        return _provider(snapshot.id, snapshot.to_dict() or {})

    def list(self) -> list[Provider]:
        snapshots = self._collection.order_by("created_at").stream()
        return [_provider(snapshot.id, snapshot.to_dict() or {}) for snapshot in snapshots]

    def revoke(self, provider_id: str, revoked_at: datetime) -> bool:
        """Mark the provider revoked and free its email; False when no such provider exists."""
        reference = self._collection.document(provider_id)
        snapshot = reference.get()
        if not snapshot.exists:
            return False
        batch = self._client.batch()
        batch.update(reference, {"revoked_at": revoked_at})
        email = (snapshot.to_dict() or {}).get("email")
        if email:
            claim = self._emails.document(email)
            if (claim.get().to_dict() or {}).get("provider_id") == provider_id:
                batch.delete(claim)
        batch.commit()
        return True

    def set_role(self, provider_id: str, role: Role) -> bool:
        """Change an account's role; return False when no such account exists."""
        with translated("Firestore"):
            try:
                self._collection.document(provider_id).update({"role": role}, **FIRESTORE_CALL)
            except NotFound:
                return False
        return True

    def fill_missing_emails(self) -> int:
        """Write `email: null` on accounts stored without the field; return how many."""
        changed = 0
        for snapshot in self._collection.stream():
            if "email" not in (snapshot.to_dict() or {}):
                snapshot.reference.update({"email": None})
                changed += 1
        return changed

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
        email=data.get("email"),
    )
