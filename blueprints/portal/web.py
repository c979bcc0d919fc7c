"""The portal's blueprint and what every page shares: who is signed in, CSRF on every form,
strict response headers, HTML error pages, and the navigation.

Sessions live in Firestore (service/accounts/signin.py); the cookie holds only the session's
random secret, in Flask's signed session cookie: HttpOnly, SameSite=Strict, Secure (and
`__Host-` named) in production, and gone when the browser closes. Every POST of the portal is
checked for its Flask-WTF CSRF token before its view runs, so no form can forget it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from flask import (
    Blueprint,
    Response,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as Redirect

from blueprints.auth import request_origin
from blueprints.context import EXTENSION_KEY, current_components
from repositories.providers import Provider, Role
from service.accounts.iap import HEADER, IapRefusedError
from service.accounts.signin import SignedOutError, refuse_sign_in, resume_session
from service.errors import RateLimitedError, ServiceError

_Params = ParamSpec("_Params")
_Response = TypeVar("_Response")

SESSION_KEY = "portal_session"
# Pages load nothing from elsewhere and run no inline script or style: what a record says can
# never run as code, even if a bug rendered it as HTML.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    # The exports page's script polls its own progress endpoint.
    "connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# Endpoints a signed-out browser may reach.
PUBLIC = frozenset(
    {"portal.static", "portal.sign_in", "portal.sign_in_link", "portal.sign_in_token"}
    | {"portal.sign_in_iap", "portal.sign_out"}
)

bp = Blueprint(
    "portal",
    __name__,
    url_prefix="/portal",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
csrf = CSRFProtect()


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: str
    admin_only: bool = False


# The navigation, in order. A page is one entry here (and its view).
NAV = [
    NavItem("portal.dashboard", "Dashboard"),
    NavItem("portal.intakes", "Intakes"),
    NavItem("portal.exports", "Exports"),
    NavItem("portal.invitations", "Invitations"),
    NavItem("portal.accounts", "Accounts", admin_only=True),
    NavItem("portal.audit", "Audit log", admin_only=True),
    NavItem("portal.status", "Keys and secrets", admin_only=True),
]


@bp.record_once
def _configure(state: BlueprintSetupState) -> None:
    app = state.app
    production = app.extensions[EXTENSION_KEY].config.is_production
    app.config.update(
        # The browser-session cookie that carries the portal session's secret and the CSRF
        # token. `__Host-` makes browsers refuse it unless Secure, Path=/ and host-only.
        SESSION_COOKIE_NAME="__Host-portal" if production else "portal",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=production,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/",
        # CSRF is checked for the portal's forms below, not for the API and the webhook,
        # whose callers hold a token or Meta's signature instead of a cookie.
        WTF_CSRF_CHECK_DEFAULT=False,
    )
    csrf.init_app(app)


@bp.before_request
def _signed_in() -> Redirect | None:
    """Resume the session (or send the browser to sign in), then check the form's CSRF token."""
    g.portal_account = None
    if request.endpoint not in PUBLIC:
        components = current_components()
        email = iap_email() if components.iap is not None else None
        try:
            g.portal_account = resume_session(
                components, session.get(SESSION_KEY), request_origin(), email
            )
        except SignedOutError as ended:
            session.pop(SESSION_KEY, None)
            reason = ended.reason if ended.reason not in ("none", "unknown") else None
            return redirect(url_for("portal.sign_in", ended=reason), 303)
    if request.method == "POST":
        csrf.protect()
    return None


def iap_email() -> str:
    """The email IAP vouches for on this request; a bad header is audited and refused."""
    components = current_components()
    assert components.iap is not None
    try:
        return components.iap.email(request.headers.get(HEADER))
    except IapRefusedError as refused:
        refuse_sign_in(components, "iap", refused.reason, request_origin())
        raise


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    # Same-origin forms send a Referer, which Flask-WTF checks on HTTPS; nothing leaves.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    return response


def account() -> Provider:
    """The signed-in account of this request."""
    signed_in: Provider | None = g.get("portal_account")
    assert signed_in is not None, "a portal view ran without a signed-in account"
    return signed_in


def admin_required(view: Callable[_Params, _Response]) -> Callable[_Params, _Response]:
    """Let the view run only for an administrator (403 for staff)."""

    @functools.wraps(view)
    def wrapped(*args: _Params.args, **kwargs: _Params.kwargs) -> _Response:
        if account().role != Role.ADMIN:
            raise PortalDeniedError("only an administrator may open this page")
        return view(*args, **kwargs)

    return wrapped


class PortalDeniedError(ServiceError):
    status = 403
    code = "forbidden"


def page(template: str, title: str, status: int = 200, **context: Any) -> tuple[str, int]:
    """Render a portal page; `title` names the page only, never a patient."""
    signed_in: Provider | None = g.get("portal_account")
    nav = [
        item
        for item in NAV
        if signed_in is not None and (not item.admin_only or signed_in.role == Role.ADMIN)
    ]
    body = render_template(f"portal/{template}", title=title, account=signed_in, nav=nav, **context)
    return body, status


def see_other(endpoint: str, **values: Any) -> Redirect:
    """Answer a form with a redirect to a page (so a reload does not post it again)."""
    return redirect(url_for(endpoint, **values), 303)


@bp.errorhandler(CSRFError)
def _csrf_refused(error: CSRFError) -> tuple[str, int]:
    message = (
        "This form expired or did not come from this portal. "
        "Go back, reload the page and try again."
    )
    return page("error.html", "Form refused", 400, message=message)


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> tuple[str, int]:
    return page("error.html", error.name, error.code or 500, message=error.description)


@bp.errorhandler(ServiceError)
def _service_error(error: ServiceError) -> tuple[str, int] | Response:
    body, status = page(
        "error.html", _TITLES.get(error.status, "Error"), error.status, message=str(error)
    )
    response = Response(body, status, mimetype="text/html")
    if isinstance(error, RateLimitedError):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


_TITLES = {
    400: "Check what you entered",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    409: "Not possible",
    410: "Gone",
    429: "Too many attempts",
    503: "Try again shortly",
}
