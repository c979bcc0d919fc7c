"""Administration: people's accounts, the audit log, and the state of keys and secrets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import request, url_for

from blueprints.context import current_components
from blueprints.portal.forms import ConfirmForm, CreateAccountForm, RoleForm
from blueprints.portal.web import Redirect, account, admin_required, bp, page, see_other
from service.accounts import people
from service.accounts.signin import IssuedLink, issue_login_link
from service.errors import InvalidInputError
from service.portal.intakes import parse_day

AUDIT_SCAN = 1000  # events read per audit page, newest first, before filtering
AUDIT_SHOWN = 200


@bp.get("/admin/accounts")
@admin_required
def accounts() -> tuple[str, int]:
    return _accounts_page()


def _accounts_page(issued: IssuedLink | None = None, status: int = 200) -> tuple[str, int]:
    components = current_components()
    listed = [person for person in components.repos.providers.list() if person.email]
    link = None
    if issued is not None:
        link = f"{url_for('portal.sign_in', _external=True)}#{issued.secret}"
    return page(
        "accounts.html",
        "Accounts",
        status,
        accounts=listed,
        create_form=CreateAccountForm(),
        role_form=RoleForm(),
        confirm_form=ConfirmForm(),
        issued=issued,
        link=link,
        me=account().provider_id,
    )


@bp.post("/admin/accounts")
@admin_required
def create_account() -> tuple[str, int]:
    components = current_components()
    form = CreateAccountForm()
    created = people.create_person(
        components.repos.providers,
        components.repos.audit,
        form.email.data or "",
        form.name.data or "",
        form.role.data or "",
        account().provider_id,
    )
    issued = issue_login_link(components, created.provider.provider_id, account().provider_id)
    return _accounts_page(issued, 201)


@bp.post("/admin/accounts/<provider_id>/role")
@admin_required
def change_role(provider_id: str) -> Redirect:
    components = current_components()
    people.change_role(
        components.repos.providers,
        components.repos.audit,
        provider_id,
        RoleForm().role.data or "",
        account().provider_id,
    )
    return see_other("portal.accounts")


@bp.post("/admin/accounts/<provider_id>/revoke")
@admin_required
def revoke_account(provider_id: str) -> Redirect:
    components = current_components()
    people.revoke_person(
        components.repos.providers, components.repos.audit, provider_id, account().provider_id
    )
    return see_other("portal.accounts")


@bp.post("/admin/accounts/<provider_id>/sign-in-link")
@admin_required
def new_sign_in_link(provider_id: str) -> tuple[str, int]:
    issued = issue_login_link(current_components(), provider_id, account().provider_id)
    return _accounts_page(issued)


@bp.get("/admin/audit")
@admin_required
def audit() -> tuple[str, int]:
    args = request.args
    today = datetime.now(UTC).date()
    start = parse_day(args.get("from")) or today - timedelta(days=7)
    end = parse_day(args.get("to")) or today
    if end < start:
        raise InvalidInputError("'to' must not be before 'from'")
    begin = datetime(start.year, start.month, start.day, tzinfo=UTC)
    finish = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    scanned = current_components().repos.audit.newest(begin, finish, AUDIT_SCAN)
    who, what, outcome = (args.get(name, "").strip() for name in ("who", "what", "outcome"))
    events = [
        event
        for event in scanned
        if (not who or event.actor == who)
        and (not what or event.action.startswith(what))
        and (not outcome or event.outcome == outcome)
    ]
    names = {
        person.provider_id: person.name for person in current_components().repos.providers.list()
    }
    return page(
        "audit.html",
        "Audit log",
        events=events[:AUDIT_SHOWN],
        matched=len(events),
        scanned=len(scanned),
        scan_limit=AUDIT_SCAN,
        names=names,
        filters={"who": who, "what": what, "outcome": outcome, "from": start, "to": end},
    )


@bp.get("/admin/status")
@admin_required
def status() -> tuple[str, int]:
    components = current_components()
    readiness = components.readiness()
    keys = components.keys.list_keys() if readiness.get("keys") is None else []
    return page(
        "status.html",
        "Keys and secrets",
        readiness=readiness,
        keys=keys,
        secrets=components.config.secret_status(),
        iap=components.iap.audience if components.iap is not None else None,
    )
