"""An administrator's changes to people's accounts, each audited: create, change role, revoke."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from repositories.audit import AuditEvent, AuditRepository
from repositories.providers import Provider, ProviderRepository, Role
from service.accounts.providers import PEOPLE, NewProvider, create_provider
from service.errors import ConflictError, InvalidInputError, NotFoundError

_PROVIDER_ID = re.compile(r"[0-9a-f]{16}")


def create_person(
    providers: ProviderRepository,
    audit: AuditRepository,
    email: str,
    name: str,
    role: str,
    actor: str,
) -> NewProvider:
    """Create an admin or staff account known by its email; the scheduler stays API-only."""
    if role not in {str(person) for person in PEOPLE}:
        raise InvalidInputError("the portal creates admin and staff accounts only")
    created = create_provider(providers, name, role, email=email)
    _audit(audit, "account.create", actor, created.provider, {"role": created.provider.role})
    return created


def change_role(
    providers: ProviderRepository, audit: AuditRepository, provider_id: str, role: str, actor: str
) -> Provider:
    """Make a person an admin or staff; nobody changes their own role (no lock-out by mistake)."""
    account = _person(providers, provider_id)
    if role not in {str(person) for person in PEOPLE}:
        raise InvalidInputError("a person's role is admin or staff")
    if account.provider_id == actor:
        raise ConflictError("you cannot change your own role; ask another administrator")
    providers.set_role(provider_id, Role(role))
    _audit(audit, "account.role", actor, account, {"from": account.role, "to": role})
    return account


def revoke_person(
    providers: ProviderRepository, audit: AuditRepository, provider_id: str, actor: str
) -> Provider:
    """Revoke a person's account: its token stops at once, its portal session on its next
    request. Nobody revokes their own account from the portal."""
    account = _person(providers, provider_id)
    if account.provider_id == actor:
        raise ConflictError("you cannot revoke your own account; ask another administrator")
    if not account.revoked:
        providers.revoke(provider_id, datetime.now(UTC))
    _audit(audit, "account.revoke", actor, account, {"role": account.role})
    return account


def _person(providers: ProviderRepository, provider_id: str) -> Provider:
    account = providers.get(provider_id) if _PROVIDER_ID.fullmatch(provider_id) else None
    if account is None:
        raise NotFoundError("no such account")
    return account


def _audit(
    audit: AuditRepository,
    action: str,
    actor: str,
    account: Provider,
    details: dict[str, object],
) -> None:
    audit.append(
        AuditEvent(
            action=action,
            outcome="success",
            at=datetime.now(UTC),
            actor=actor,
            details={"account": account.provider_id, **details},
        )
    )
