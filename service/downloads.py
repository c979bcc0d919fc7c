"""Signed-link downloads, limited per client address: link guessing is slowed down across every
instance, and cannot fill the audit log, while a valid link is always honoured.
"""

from __future__ import annotations

from itsdangerous import BadData

from service import exports as export_service
from service.components import Components
from service.errors import (
    GoneError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServiceError,
)
from service.exports import ExportDownload
from service.providers import RequestOrigin
from service.ratelimit import audit_throttle

# Answers to a bad or stale link; a dependency outage (503) is not the caller's failure.
_LINK_FAILURES = (PermissionDeniedError, GoneError, NotFoundError)


def open_limited_download(
    components: Components, export_id: str, token: str | None, origin: RequestOrigin
) -> ExportDownload:
    """Open a download like `exports.open_download`, counting failed links per address.

    A link correctly signed for this export is honoured whatever the address did before: it
    proves possession of a link we issued, and refusing it would let anyone sharing a clinic's
    address lock the clinic out. Any other link is a failure: past the limit it gets 429 with
    Retry-After, and one summary audit event per window instead of one event per attempt.
    """
    limiter = components.download_failures
    if _signed_for(components, export_id, token):
        try:
            return export_service.open_download(components, export_id, token, origin)
        except _LINK_FAILURES:
            # A link we issued whose export or provider is gone: answered and audited as
            # such, since only a holder of our own signed link can get here; still counted.
            limiter.record_failure(origin.ip)
            raise
    throttle = limiter.record_failure(origin.ip)
    if throttle is not None:
        audit_throttle(components.repos.audit, "export.download", limiter, throttle, origin)
        raise RateLimitedError(
            "too many failed download attempts; try again later",
            retry_after=throttle.retry_after,
        )
    # Under the limit: the same checks fail again there, with the reason audited (403 or 410).
    return export_service.open_download(components, export_id, token, origin)


def _signed_for(components: Components, export_id: str, token: str | None) -> bool:
    """Tell whether the token is ours, unexpired and names this export (no I/O)."""
    config = components.config
    try:
        signed_export_id, _ = export_service.read_download_token(
            config.secret_key, token, config.export_link_ttl_seconds
        )
    except (ServiceError, BadData):
        return False
    return signed_export_id == export_id
