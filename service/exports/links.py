"""Signed, expiring download links and the downloads they open (tampered 403, expired 410,
unknown 404), limited per address like failed logins."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from repositories.exports import ExportEntry, ExportStatus
from service.accounts.ratelimit import RequestOrigin, audit_throttle
from service.errors import (
    GoneError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServiceError,
)
from service.exports.audit import EXPORT_ID, audit_export_event
from service.exports.ports import ExportDeps

DOWNLOAD_SALT = "export-download"


@dataclass(frozen=True)
class ExportDownload:
    export_id: str
    file_name: str
    size: int
    chunks: Iterator[bytes]
    password_date: date  # the UTC day whose password opens the zip: the day it was built


class _ClockSigner(TimestampSigner):
    """A TimestampSigner whose clock can be given: links are signed and checked at `now`."""

    def __init__(self, *args: Any, now: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._now = now

    def get_timestamp(self) -> int:
        return int(self._now if self._now is not None else time.time())


def _serializer(secret_key: str, now: datetime | None) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        secret_key,
        salt=DOWNLOAD_SALT,
        signer=_ClockSigner,
        signer_kwargs={"now": now.timestamp() if now else None},
    )


def sign_download_token(
    secret_key: str, export_id: str, provider_id: str, issued_at: datetime, ttl_seconds: int
) -> tuple[str, datetime]:
    """Sign {export_id, provider_id} at issued_at; return the token and when it expires."""
    token = _serializer(secret_key, issued_at).dumps(
        {"export_id": export_id, "provider_id": provider_id}
    )
    signed_at = datetime.fromtimestamp(int(issued_at.timestamp()), UTC)
    return token, signed_at + timedelta(seconds=ttl_seconds)


def read_download_token(
    secret_key: str, token: str | None, ttl_seconds: int, now: datetime | None = None
) -> tuple[str, str]:
    """Return (export_id, provider_id) from a token; 403 when forged or tampered, 410 expired."""
    if not token:
        raise PermissionDeniedError("a signed download link is required")
    try:
        payload = _serializer(secret_key, now).loads(token, max_age=ttl_seconds)
    except SignatureExpired:  # checked after the signature: a forged token never gets here
        raise GoneError("this download link has expired; request a new export") from None
    except BadData:
        raise PermissionDeniedError("this download link is not valid") from None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("export_id"), str)
        or not isinstance(payload.get("provider_id"), str)
    ):
        raise PermissionDeniedError("this download link is not valid")
    return payload["export_id"], payload["provider_id"]


def open_download(
    components: ExportDeps,
    export_id: str,
    token: str | None,
    origin: RequestOrigin | None = None,
    now: datetime | None = None,
) -> ExportDownload:
    """Check a signed link and open its zip for streaming; audit the attempt either way."""
    origin = origin or RequestOrigin()
    # The path is caller input: only an id of the right shape goes into the audit log.
    details: dict[str, Any] = {"export_id": export_id if EXPORT_ID.fullmatch(export_id) else None}
    actor: list[str | None] = [None]
    try:
        entry = _authorise_download(components, export_id, token, now, actor)
        stream = components.repos.exports.open_zip(entry.object_name)
        if stream is None:
            raise GoneError(f"export {export_id} has been purged; request a new export")
    except Exception as error:  # audited, then raised on
        audit_export_event(
            components, "export.download", "failure", actor[0], origin, details, error
        )
        raise
    details.update(format=entry.format, records=entry.records, size_bytes=stream.size)
    audit_export_event(components, "export.download", "success", actor[0], origin, details)
    return ExportDownload(
        export_id=export_id,
        file_name=f"intakes-{export_id}.zip",
        size=stream.size,
        chunks=stream.chunks,
        password_date=entry.password_date,
    )


# Answers to a bad or stale link; a dependency outage (503) is not the caller's failure.
_LINK_FAILURES = (PermissionDeniedError, GoneError, NotFoundError)


def open_limited_download(
    components: ExportDeps, export_id: str, token: str | None, origin: RequestOrigin
) -> ExportDownload:
    """Open a download like `open_download`, counting failed links per address.

    A link correctly signed for this export is honoured whatever the address did before: it
    proves possession of a link we issued, and refusing it would let anyone sharing a clinic's
    address lock the clinic out. Any other link is a failure: past the limit it gets 429 with
    Retry-After, and one summary audit event per window instead of one event per attempt.
    """
    limiter = components.download_failures
    if _signed_for(components, export_id, token):
        try:
            return open_download(components, export_id, token, origin)
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
    return open_download(components, export_id, token, origin)


def _signed_for(components: ExportDeps, export_id: str, token: str | None) -> bool:
    """Tell whether the token is ours, unexpired and names this export (no I/O)."""
    config = components.config
    try:
        signed_export_id, _ = read_download_token(
            config.secret_key, token, config.export_link_ttl_seconds
        )
    except (ServiceError, BadData):
        return False
    return signed_export_id == export_id


def _authorise_download(
    components: ExportDeps,
    export_id: str,
    token: str | None,
    now: datetime | None,
    actor: list[str | None],
) -> ExportEntry:
    config = components.config
    signed_export_id, provider_id = read_download_token(
        config.secret_key, token, config.export_link_ttl_seconds, now
    )
    actor[0] = provider_id
    if signed_export_id != export_id:
        raise PermissionDeniedError("this download link is for another export")
    entry = components.repos.exports.get(export_id)
    if entry is None:
        raise NotFoundError(f"export {export_id} not found")
    provider = components.repos.providers.get(provider_id)
    if provider is None or provider.revoked or entry.provider_id != provider_id:
        raise PermissionDeniedError("the provider account of this link is no longer active")
    if entry.status == ExportStatus.PURGED:
        raise GoneError(f"export {export_id} has been purged; request a new export")
    return entry
