"""The invitations staff sent, each with where the patient got to; numbers masked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import phonenumbers

from repositories.insights import InvitationRow
from service.domain.identity import PatientIdentity
from service.domain.turns import ConversationStatus
from service.portal.ports import PortalDeps

LIST_SIZE = 50
_ANSWERED = {ConversationStatus.IN_PROGRESS, ConversationStatus.CONFIRMING}


@dataclass(frozen=True)
class Invitation:
    reference: str  # the first characters of the conversation's key: not patient data
    to: str  # masked: the country code and the last three digits
    invited_at: datetime
    invited_by: str
    state: str  # sent, answered, opted out, completed, failed delivery


def list_invitations(deps: PortalDeps) -> list[Invitation]:
    """Return the latest invitations, newest first."""
    names = {account.provider_id: account.name for account in deps.repos.providers.list()}
    rows = deps.repos.insights.invitations(LIST_SIZE)
    return [
        Invitation(
            reference=row.conversation[:8],
            to=mask(row.identity),
            invited_at=row.invited_at,
            invited_by=names.get(row.invited_by or "", "(unknown account)"),
            state=invitation_state(row),
        )
        for row in rows
    ]


def invitation_state(row: InvitationRow) -> str:
    """Where the invitation got to: the conversation's status, or a failed delivery since."""
    failed = row.last_error_at is not None and row.last_error_at >= row.invited_at
    if row.status == ConversationStatus.COMPLETED:
        return "completed"
    if row.status in _ANSWERED:
        return "answered"
    if row.status == ConversationStatus.OPTED_OUT:
        return "opted out"
    if failed and row.failed_deliveries:
        return "failed delivery"
    return "sent"


def mask(identity: PatientIdentity | None) -> str:
    """Show enough of a number for staff to tell their invitations apart, no more."""
    if identity is None or not identity.phone:
        return "WhatsApp user without a number"
    try:
        country = phonenumbers.parse("+" + identity.phone).country_code
    except phonenumbers.NumberParseException:
        country = None
    prefix = f"+{country} " if country else "+"
    return f"{prefix}••• ••• {identity.phone[-3:]}"
