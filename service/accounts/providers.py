"""Provider accounts: create, list, revoke, and authenticate bearer tokens for a role."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from repositories.audit import AuditEvent, AuditRepository
from repositories.providers import Provider, ProviderRepository, Role
from service.accounts.ratelimit import RequestOrigin, SharedFailureLimiter, audit_throttle
from service.errors import (
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    UnauthorizedError,
)

_TOKEN_PREFIX = "ipt"
_PROVIDER_ID = re.compile(r"[0-9a-f]{16}")
# Deliberately plain: one @, a dot in the domain, no spaces or control characters. Whether the
# address receives mail is not ours to check; IAP vouches for it in production.
_EMAIL = re.compile(r"[^@\s\x00-\x1f]{1,64}@[a-z0-9-]+(\.[a-z0-9-]+)+")

# Who may call what. People (admin, staff) use the provider endpoints; the Cloud Scheduler
# account only starts tasks, so the token stored in its job cannot read a record. An admin may
# start a task by hand; staff have no need to.
PEOPLE = frozenset({Role.ADMIN, Role.STAFF})
TASK_RUNNERS = frozenset({Role.ADMIN, Role.SCHEDULER})


@dataclass(frozen=True)
class NewProvider:
    provider: Provider
    token: str  # shown once; only its hash is stored


def _hash_secret(secret: str) -> str:
    # Tokens carry 256 random bits, so a plain SHA-256 is enough; no slow hash is needed.
    return hashlib.sha256(secret.encode()).hexdigest()


def normalise_email(value: object) -> str:
    """Return an email address in lower case, or raise 400 (the message never quotes it)."""
    if not isinstance(value, str):
        raise InvalidInputError("email must be an address like name@clinic.example")
    email = value.strip().lower()
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise InvalidInputError("email must be an address like name@clinic.example")
    return email


def create_provider(
    providers: ProviderRepository, name: str, role: str = Role.STAFF, email: str | None = None
) -> NewProvider:
    """Create a provider account with a role and return it with its one-time token.

    People (admin, staff) may have an email, the name the portal knows them by; the
    scheduler never does, since it never signs in to the portal.
    """
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise InvalidInputError("provider name must be 1 to 100 characters")
    try:
        role = Role(role)
    except ValueError:
        raise InvalidInputError(f"role must be one of {', '.join(Role)}") from None
    if email is not None:
        email = normalise_email(email)
        if role not in PEOPLE:
            raise InvalidInputError("only admin and staff accounts have an email")
    provider_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    provider = Provider(
        provider_id=provider_id,
        name=name,
        token_hash=_hash_secret(secret),
        created_at=datetime.now(UTC),
        role=role,
        email=email,
    )
    providers.add(provider)
    return NewProvider(provider=provider, token=f"{_TOKEN_PREFIX}_{provider_id}_{secret}")


def list_providers(providers: ProviderRepository) -> list[Provider]:
    """Return every provider account, oldest first."""
    return providers.list()


def revoke_provider(providers: ProviderRepository, provider_id: str) -> None:
    """Revoke a provider's token; raise NotFoundError for an unknown id."""
    if not providers.revoke(provider_id, datetime.now(UTC)):
        raise NotFoundError(f"provider {provider_id} not found")


def authenticate(
    providers: ProviderRepository,
    audit: AuditRepository,
    authorization: str | None,
    origin: RequestOrigin,
    allowed_roles: frozenset[Role],
    limiter: SharedFailureLimiter | None = None,
) -> Provider:
    """Return the provider a bearer token belongs to if its role is allowed; audit every try.

    A good token always gets in, even from an address past its failure limit. A bad one past
    the limit gets 429 with Retry-After; those refusals are counted by the limiter and
    summarised in one audit event per window, not audited one by one (one event per failure
    would let anyone fill the audit log). A good token whose role is not allowed gets 403,
    audited as `denied`; it is not a failed login, so the limiter does not count it.
    """
    provider, reason = _check_token(providers, authorization)
    if limiter is not None and provider is None:
        throttle = limiter.record_failure(origin.ip)
        if throttle is not None:
            audit_throttle(audit, "provider.authenticate", limiter, throttle, origin)
            raise RateLimitedError(
                "too many failed attempts; try again later", retry_after=throttle.retry_after
            )
    details: dict[str, object] = {"path": origin.path}
    if provider is None:
        outcome, details["reason"] = "failure", reason
    elif provider.role not in allowed_roles:
        outcome, details["reason"] = "denied", "insufficient_role"
        details.update(role=provider.role, allowed_roles=sorted(allowed_roles))
    else:
        outcome, details["role"] = "success", provider.role
    audit.append(
        AuditEvent(
            action="provider.authenticate",
            outcome=outcome,
            at=datetime.now(UTC),
            actor=provider.provider_id if provider else None,
            ip=origin.ip,
            user_agent=origin.user_agent,
            details=details,
        )
    )
    if provider is None:
        raise UnauthorizedError("a valid provider token is required")
    if outcome == "denied":
        raise PermissionDeniedError(
            f"the role of this account ({provider.role}) may not use this endpoint"
        )
    return provider


def _check_token(
    providers: ProviderRepository, authorization: str | None
) -> tuple[Provider | None, str | None]:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None, "missing"
    return check_token(providers, token)


def check_token(providers: ProviderRepository, token: str) -> tuple[Provider | None, str | None]:
    """Return the account a token belongs to, or None and why not (missing, malformed,
    unknown, revoked); the token itself is never returned or logged."""
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != _TOKEN_PREFIX or not _PROVIDER_ID.fullmatch(parts[1]):
        return None, "malformed"
    provider = providers.get(parts[1])
    if provider is None or not hmac.compare_digest(provider.token_hash, _hash_secret(parts[2])):
        return None, "unknown"
    if provider.revoked:
        return None, "revoked"
    return provider, None
