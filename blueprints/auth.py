"""The provider-authentication decorator shared by every provider endpoint."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import g, request

from blueprints.context import current_components
from service.accounts.providers import Role, authenticate
from service.accounts.ratelimit import RequestOrigin

_Params = ParamSpec("_Params")
_Response = TypeVar("_Response")


def request_origin() -> RequestOrigin:
    """Describe where the current request came from, for audit events."""
    # The route pattern, not the raw path: a path can carry whatever the caller typed.
    route = request.url_rule.rule if request.url_rule else "(unmatched)"
    return RequestOrigin(
        ip=request.remote_addr, user_agent=request.user_agent.string[:200], path=route
    )


def provider_required(
    allowed_roles: frozenset[Role],
) -> Callable[[Callable[_Params, _Response]], Callable[_Params, _Response]]:
    """Let the view run only for a valid, unrevoked token of one of these roles.

    The provider goes on `g.provider`. No default: each endpoint names the roles it admits
    (`service.accounts.providers.PEOPLE` or `TASK_RUNNERS`).
    """

    def decorate(view: Callable[_Params, _Response]) -> Callable[_Params, _Response]:
        @functools.wraps(view)
        def wrapped(*args: _Params.args, **kwargs: _Params.kwargs) -> _Response:
            components = current_components()
            g.provider = authenticate(
                components.repos.providers,
                components.repos.audit,
                request.headers.get("Authorization"),
                request_origin(),
                allowed_roles,
                components.auth_failures,
            )
            return view(*args, **kwargs)

        return wrapped

    return decorate
