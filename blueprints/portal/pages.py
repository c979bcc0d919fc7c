"""What staff open: the dashboard, completed intakes, one record, and invitations."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import request

from blueprints.auth import request_origin
from blueprints.context import current_components
from blueprints.portal.forms import InviteForm
from blueprints.portal.web import Redirect, account, bp, page, see_other
from service.conversation.invitations import start_conversation
from service.conversation.stats import reminder_stats
from service.domain.record import reference_code
from service.portal import intakes as intake_service
from service.portal.dashboard import dashboard as dashboard_figures
from service.portal.invitations import list_invitations


@bp.get("/")
def dashboard() -> tuple[str, int]:
    components = current_components()
    figures = dashboard_figures(components, datetime.now(UTC))
    reminders = reminder_stats(components)
    return page("dashboard.html", "Dashboard", figures=figures, reminders=reminders)


@bp.get("/intakes")
def intakes() -> tuple[str, int]:
    day = intake_service.parse_day(request.args.get("day"))
    shown = intake_service.intake_page(
        current_components(), account().provider_id, request_origin(), day,
        request.args.get("after") or None,
    )  # fmt: skip
    return page("intakes.html", "Intakes", intakes=shown, day=day)


@bp.get("/intakes/<record_id>")
def intake(record_id: str) -> tuple[str, int]:
    record = intake_service.intake_record(
        current_components(), account().provider_id, request_origin(), record_id
    )
    return page("intake.html", "Intake record", record=record, reference=reference_code(record_id))


@bp.get("/invitations")
def invitations() -> tuple[str, int]:
    sent = request.args.get("sent") == "1"
    rows = list_invitations(current_components())
    return page("invitations.html", "Invitations", form=InviteForm(), rows=rows, sent=sent)


@bp.post("/invitations")
def invite() -> Redirect:
    phone = InviteForm().phone.data
    start_conversation(current_components(), phone, account().provider_id)
    return see_other("portal.invitations", sent="1")
