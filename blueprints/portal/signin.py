"""Signing in and out of the portal: IAP's identity, a one-time link, or the account's token."""

from __future__ import annotations

from flask import request, session

from blueprints.auth import request_origin
from blueprints.context import current_components
from blueprints.portal.forms import IapSignInForm, LinkSignInForm, SignOutForm, TokenSignInForm
from blueprints.portal.web import SESSION_KEY, Redirect, bp, iap_email, page, see_other
from service.accounts import signin as signin_service
from service.accounts.signin import NewSession
from service.errors import InvalidInputError

# Why a browser was sent back to sign in, as the page says it (`?ended=` names a key here).
ENDED = {
    "idle": "You were signed out after a period without activity.",
    "expired": "You were signed out: a session lasts at most 12 hours.",
    "revoked": "You were signed out: this account is no longer active.",
    "not_a_person": "You were signed out: this account cannot use the portal.",
    "signed_out": "You are signed out.",
    "iap_identity_changed": "You were signed out: you are now signed in to Google as someone else.",
}


@bp.get("/sign-in")
def sign_in() -> tuple[str, int]:
    components = current_components()
    ended = ENDED.get(request.args.get("ended", ""))
    if components.iap is not None:
        email = iap_email()
        return page("sign_in_iap.html", "Sign in", form=IapSignInForm(), email=email, ended=ended)
    return page(
        "sign_in.html",
        "Sign in",
        link_form=LinkSignInForm(),
        token_form=TokenSignInForm(),
        ended=ended,
    )


@bp.post("/sign-in/link")
def sign_in_link() -> Redirect:
    components = current_components()
    if components.iap is not None:
        raise InvalidInputError("this portal signs in through Google (IAP) only")
    # A whole link may be pasted: the secret is what follows the '#'.
    typed = (LinkSignInForm().secret.data or "").strip().rsplit("#", 1)[-1]
    return _signed_in(signin_service.sign_in_with_link(components, typed, request_origin()))


@bp.post("/sign-in/token")
def sign_in_token() -> Redirect:
    components = current_components()
    if components.iap is not None:
        raise InvalidInputError("this portal signs in through Google (IAP) only")
    token = (TokenSignInForm().token.data or "").strip()
    return _signed_in(signin_service.sign_in_with_token(components, token, request_origin()))


@bp.post("/sign-in/iap")
def sign_in_iap() -> Redirect:
    components = current_components()
    if components.iap is None:
        raise InvalidInputError("this portal is not behind Identity-Aware Proxy")
    email = iap_email()
    return _signed_in(signin_service.sign_in_with_email(components, email, request_origin()))


def _signed_in(started: NewSession) -> Redirect:
    # A fresh cookie (and CSRF token) at every sign-in: nothing set before it carries over.
    session.clear()
    session[SESSION_KEY] = started.secret
    return see_other("portal.dashboard")


@bp.post("/sign-out")
def sign_out() -> Redirect:
    SignOutForm()  # the CSRF token was checked before this view ran
    signin_service.sign_out(current_components(), session.get(SESSION_KEY), request_origin())
    session.clear()
    return see_other("portal.sign_in", ended="signed_out")
