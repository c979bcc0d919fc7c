"""Signing people in to the portal, keeping them signed in, and signing them out.

Three ways in, each ending in the same server-side session:
- behind Identity-Aware Proxy (production): the email IAP vouches for names the account;
- a one-time sign-in link an admin hands over (`accounts login-link`, or the portal):
  short-lived, stored only as a hash, good once;
- the account's own API token, pasted into the sign-in form.
A session is a random secret in the browser's cookie and its hash in Firestore; it ends after
`portal_idle_seconds` without a request, `portal_session_seconds` after it began, on sign-out,
and on the next request after its account is revoked or stops being a person's (admin, staff).
Every sign-in, refusal and end is audited, never with a secret.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from repositories.audit import AuditRepository
from repositories.providers import Provider, ProviderRepository
from repositories.signins import LoginLink, PortalSession, SignInRepository
from service.accounts.providers import PEOPLE, check_token
from service.accounts.ratelimit import (
    RequestOrigin,
    SharedFailureLimiter,
    audit_request,
    audit_throttle,
)
from service.errors import InvalidInputError, NotFoundError, RateLimitedError, UnauthorizedError

LINK_LIFETIME = timedelta(hours=1)
_LINK_PREFIX = "isl"  # intake sign-in link, so a pasted secret is recognisable for what it is
SIGN_IN = "portal.sign_in"
SIGN_OUT = "portal.sign_out"


class SignInStores(Protocol):
    @property
    def providers(self) -> ProviderRepository: ...
    @property
    def signins(self) -> SignInRepository: ...
    @property
    def audit(self) -> AuditRepository: ...


class SessionSettings(Protocol):
    @property
    def portal_idle_seconds(self) -> int: ...
    @property
    def portal_session_seconds(self) -> int: ...


class SignInDeps(Protocol):
    @property
    def repos(self) -> SignInStores: ...
    @property
    def config(self) -> SessionSettings: ...
    @property
    def auth_failures(self) -> SharedFailureLimiter: ...


class SignedOutError(UnauthorizedError):
    """The session is over; `reason` says why (idle, expired, revoked, ...), for the page."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"signed out ({reason})")


@dataclass(frozen=True)
class NewSession:
    account: Provider
    secret: str  # goes in the cookie; only its hash is stored


@dataclass(frozen=True)
class IssuedLink:
    account: Provider
    secret: str  # shown once, in the link
    expires_at: datetime


def _hash(secret: str) -> str:
    # Secrets carry 256 random bits: a plain SHA-256 is enough, no slow hash is needed.
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_login_link(deps: SignInDeps, provider_id: str, actor: str) -> IssuedLink:
    """Create a one-time sign-in link for a person's account; audited, never the secret."""
    account = deps.repos.providers.get(provider_id)
    if account is None or account.revoked or account.role not in PEOPLE:
        raise NotFoundError("no active admin or staff account with this id")
    secret = f"{_LINK_PREFIX}_{secrets.token_urlsafe(32)}"
    now = datetime.now(UTC)
    link = LoginLink(_hash(secret), account.provider_id, now, now + LINK_LIFETIME, actor)
    deps.repos.signins.add_link(link)
    _audit(deps, "portal.login_link", "success", actor, None, {"account": account.provider_id})
    return IssuedLink(account, secret, link.expires_at)


def sign_in_with_link(deps: SignInDeps, secret: str, origin: RequestOrigin) -> NewSession:
    """Spend a one-time link and start a session, or refuse (and count the failure)."""
    now = datetime.now(UTC)
    link = deps.repos.signins.use_link(_hash(secret.strip()), now) if secret.strip() else None
    account: Provider | None = None
    reason: str | None
    if link is None:
        reason = "unknown_or_used"
    elif link.expires_at <= now:
        reason = "expired"
    else:
        account = deps.repos.providers.get(link.provider_id)
        reason = _refusal(account)
    return _start(deps, "link", account if reason is None else None, reason, origin)


def sign_in_with_token(deps: SignInDeps, token: str, origin: RequestOrigin) -> NewSession:
    """Start a session for the account whose API token was pasted, or refuse."""
    account, reason = check_token(deps.repos.providers, token)
    reason = reason or _refusal(account)
    return _start(deps, "token", account if reason is None else None, reason, origin)


def sign_in_with_email(
    deps: SignInDeps, email: str, origin: RequestOrigin, method: str = "iap"
) -> NewSession:
    """Start a session for the account a verified email (IAP's) belongs to, or refuse."""
    account = deps.repos.providers.by_email(email)
    reason = "no_account" if account is None else _refusal(account)
    return _start(deps, method, account if reason is None else None, reason, origin)


def refuse_sign_in(deps: SignInDeps, method: str, reason: str, origin: RequestOrigin) -> None:
    """Count and audit a sign-in refused before any account was found (a forged header)."""
    _start(deps, method, None, reason, origin)


def _refusal(account: Provider | None) -> str | None:
    if account is None:
        return "unknown"
    if account.revoked:
        return "revoked"
    if account.role not in PEOPLE:
        return "not_a_person"
    return None


def _start(
    deps: SignInDeps,
    method: str,
    account: Provider | None,
    reason: str | None,
    origin: RequestOrigin,
) -> NewSession:
    details: dict[str, object] = {"method": method, "path": origin.path}
    if account is None:
        throttle = deps.auth_failures.record_failure(origin.ip)
        if throttle is not None:
            audit_throttle(deps.repos.audit, SIGN_IN, deps.auth_failures, throttle, origin)
            raise RateLimitedError(
                "too many failed sign-ins; try again later", retry_after=throttle.retry_after
            )
        _audit(deps, SIGN_IN, "failure", None, origin, {**details, "reason": reason})
        raise UnauthorizedError("this sign-in did not work: ask your administrator for a new one")
    secret = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    deps.repos.signins.add_session(
        PortalSession(_hash(secret), account.provider_id, method, now, now)
    )
    _audit(deps, SIGN_IN, "success", account.provider_id, origin, {**details, "role": account.role})
    return NewSession(account, secret)


def resume_session(
    deps: SignInDeps, secret: str | None, origin: RequestOrigin, email: str | None = None
) -> Provider:
    """Return the signed-in account of a session cookie, and mark the session used.

    Raises SignedOutError when there is no session, or it ended: idle too long, past its
    absolute limit, its account revoked or no longer a person's, or (behind IAP) the email
    IAP vouches for is no longer the session's. An ending is audited once, here.
    """
    if not secret:
        raise SignedOutError("none")
    session_hash = _hash(secret)
    session = deps.repos.signins.session(session_hash)
    if session is None:
        raise SignedOutError("unknown")
    if session.ended_at is not None:
        raise SignedOutError(session.end_reason or "ended")
    now = datetime.now(UTC)
    account = deps.repos.providers.get(session.provider_id)
    settings = deps.config
    reason = None
    if account is None or account.revoked:
        reason = "revoked"
    elif account.role not in PEOPLE:
        reason = "not_a_person"
    elif email is not None and account.email != email:
        reason = "iap_identity_changed"
    elif now - session.started_at >= timedelta(seconds=settings.portal_session_seconds):
        reason = "expired"
    elif now - session.last_seen_at >= timedelta(seconds=settings.portal_idle_seconds):
        reason = "idle"
    if reason is not None or account is None:
        _end(deps, session, reason or "revoked", origin, now)
        raise SignedOutError(reason or "revoked")
    deps.repos.signins.touch_session(session_hash, now)
    return account


def sign_out(deps: SignInDeps, secret: str | None, origin: RequestOrigin) -> None:
    """End the session the cookie names (a sign-out the person asked for)."""
    if not secret:
        return
    session = deps.repos.signins.session(_hash(secret))
    if session is not None and session.ended_at is None:
        _end(deps, session, "signed_out", origin, datetime.now(UTC))


def _end(
    deps: SignInDeps, session: PortalSession, reason: str, origin: RequestOrigin, now: datetime
) -> None:
    deps.repos.signins.end_session(session.session_hash, now, reason)
    details: dict[str, object] = {"reason": reason, "method": session.method}
    details["path"] = origin.path
    _audit(deps, SIGN_OUT, "success", session.provider_id, origin, details)


def login_link_secret(value: object) -> str:
    """Return a sign-in link's secret as given in a form, or raise 400."""
    if not isinstance(value, str) or not value.startswith(f"{_LINK_PREFIX}_") or len(value) > 100:
        raise InvalidInputError("this is not a sign-in link")
    return value


def _audit(
    deps: SignInDeps,
    action: str,
    outcome: str,
    actor: str | None,
    origin: RequestOrigin | None,
    details: dict[str, object],
) -> None:
    audit_request(deps.repos.audit, action, outcome, actor, origin, details)
