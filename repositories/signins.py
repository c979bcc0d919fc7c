"""Portal sign-ins: `portal_sessions/{hash}` and `login_links/{hash}`.

Both are named by a SHA-256 of a random secret the browser or the account holder keeps; the
secret itself is never stored, so reading the collections in the console hands nobody a way
in. A session records who, how they signed in, when it started and when it was last used; the
portal ends it (idle, absolute limit, sign-out, revoked account) by setting `ended_at`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud import firestore

from repositories.clients import FIRESTORE_CALL, translated

SESSIONS = "portal_sessions"
LOGIN_LINKS = "login_links"


@dataclass(frozen=True)
class PortalSession:
    session_hash: str
    provider_id: str
    method: str  # "link", "token" or "iap"
    started_at: datetime
    last_seen_at: datetime
    ended_at: datetime | None = None
    end_reason: str | None = None


@dataclass(frozen=True)
class LoginLink:
    link_hash: str
    provider_id: str
    created_at: datetime
    expires_at: datetime
    created_by: str
    used_at: datetime | None = None


class SignInRepository:
    """Read and write portal sessions and one-time sign-in links."""

    def __init__(self, client: firestore.Client) -> None:
        self._client = client
        self._sessions = client.collection(SESSIONS)
        self._links = client.collection(LOGIN_LINKS)

    # -- sessions --------------------------------------------------------------------------
    def add_session(self, session: PortalSession) -> None:
        with translated("Firestore"):
            self._sessions.document(session.session_hash).create(
                {
                    "provider_id": session.provider_id,
                    "method": session.method,
                    "started_at": session.started_at,
                    "last_seen_at": session.last_seen_at,
                    "ended_at": None,
                    "end_reason": None,
                },
                **FIRESTORE_CALL,
            )

    def session(self, session_hash: str) -> PortalSession | None:
        with translated("Firestore"):
            snapshot = self._sessions.document(session_hash).get(**FIRESTORE_CALL)
        if not snapshot.exists:
            return None
        return _session(snapshot.id, snapshot.to_dict() or {})

    def touch_session(self, session_hash: str, at: datetime) -> None:
        with translated("Firestore"):
            self._sessions.document(session_hash).update({"last_seen_at": at}, **FIRESTORE_CALL)

    def end_session(self, session_hash: str, at: datetime, reason: str) -> None:
        with translated("Firestore"):
            self._sessions.document(session_hash).update(
                {"ended_at": at, "end_reason": reason}, **FIRESTORE_CALL
            )

    # -- one-time sign-in links ------------------------------------------------------------
    def add_link(self, link: LoginLink) -> None:
        with translated("Firestore"):
            self._links.document(link.link_hash).create(
                {
                    "provider_id": link.provider_id,
                    "created_at": link.created_at,
                    "expires_at": link.expires_at,
                    "created_by": link.created_by,
                    "used_at": None,
                },
                **FIRESTORE_CALL,
            )

    def link(self, link_hash: str) -> LoginLink | None:
        with translated("Firestore"):
            snapshot = self._links.document(link_hash).get(**FIRESTORE_CALL)
        if not snapshot.exists:
            return None
        return _link(snapshot.id, snapshot.to_dict() or {})

    def use_link(self, link_hash: str, at: datetime) -> LoginLink | None:
        """Mark a link used, once: return it, or None when it is unknown or was used already.

        A transaction, so two browsers racing with the same link cannot both sign in.
        """
        reference = self._links.document(link_hash)

        @firestore.transactional
        def claim(transaction: firestore.Transaction) -> LoginLink | None:
            snapshot = reference.get(transaction=transaction)
            if not snapshot.exists:
                return None
            link = _link(snapshot.id, snapshot.to_dict() or {})
            if link.used_at is not None:
                return None
            transaction.update(reference, {"used_at": at})
            return link

        with translated("Firestore"):
            return claim(self._client.transaction())


def _session(session_hash: str, data: dict[str, Any]) -> PortalSession:
    return PortalSession(
        session_hash=session_hash,
        provider_id=data["provider_id"],
        method=data["method"],
        started_at=data["started_at"],
        last_seen_at=data["last_seen_at"],
        ended_at=data.get("ended_at"),
        end_reason=data.get("end_reason"),
    )


def _link(link_hash: str, data: dict[str, Any]) -> LoginLink:
    return LoginLink(
        link_hash=link_hash,
        provider_id=data["provider_id"],
        created_at=data["created_at"],
        expires_at=data["expires_at"],
        created_by=data["created_by"],
        used_at=data.get("used_at"),
    )
