"""Verify the identity Google's Identity-Aware Proxy vouches for: `X-Goog-IAP-JWT-Assertion`.

IAP signs every request it lets through with ES256; the app checks the signature against IAP's
published keys, the audience (the portal's own backend service or Cloud Run service), the
issuer and the expiry, as Google's guide says: https://cloud.google.com/iap/docs/signed-headers-howto
Checking the header, not merely trusting that IAP is in front, keeps a request that bypassed
IAP (a misconfigured ingress, another service in the project) from being taken for a person.

google-auth does the verification (the same `id_token.verify_token` Google's sample uses);
this module only caches IAP's keys and turns its errors into ours. It is the one module of
the service besides the KMS adapter that imports google.* (see pyproject.toml).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
from google.oauth2 import id_token

from service.errors import UnauthorizedError, UnavailableError

logger = logging.getLogger(__name__)

HEADER = "X-Goog-IAP-JWT-Assertion"
ISSUER = "https://cloud.google.com/iap"
# The keys in the {key id: PEM} form google-auth reads without extra packages.
DEFAULT_CERTS_URL = "https://www.gstatic.com/iap/verify/public_key"
_CACHE_SECONDS = 300.0  # IAP rotates its keys with overlap; a refetch per request is waste
_FETCH_TIMEOUT = 5.0
_CLOCK_SKEW_SECONDS = 10


class IapRefusedError(UnauthorizedError):
    """The assertion is missing or does not verify; `reason` says why, for the audit log."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__("the request did not come through the portal's Identity-Aware Proxy")


class _CachingRequest(google.auth.transport.Request):
    """google-auth's HTTP request, keeping successful GETs of the key URL for a while."""

    def __init__(self, ttl: float = _CACHE_SECONDS) -> None:
        self._inner = google.auth.transport.requests.Request()
        self._ttl = ttl
        self._cached: dict[str, tuple[float, google.auth.transport.Response]] = {}
        self._lock = threading.Lock()

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: Any = None,
        **kwargs: Any,
    ) -> google.auth.transport.Response:
        now = time.monotonic()
        with self._lock:
            hit = self._cached.get(url)
        if method == "GET" and hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        response = self._inner(
            url, method=method, body=body, headers=headers, timeout=timeout or _FETCH_TIMEOUT
        )
        if method == "GET" and response.status == 200:
            with self._lock:
                self._cached[url] = (now, response)
        return response


class IapVerifier:
    """Check IAP's signed header and return the email it vouches for."""

    def __init__(self, audience: str, certs_url: str = DEFAULT_CERTS_URL) -> None:
        self.audience = audience
        self._certs_url = certs_url
        self._request = _CachingRequest()

    def email(self, assertion: str | None) -> str:
        """Return the verified, lower-case email; raise IapRefusedError or UnavailableError."""
        if not assertion:
            raise IapRefusedError("missing")
        try:
            claims = id_token.verify_token(
                assertion,
                self._request,
                audience=self.audience,
                certs_url=self._certs_url,
                clock_skew_in_seconds=_CLOCK_SKEW_SECONDS,
            )
        except google.auth.exceptions.TransportError as error:
            raise UnavailableError(
                f"IAP's public keys could not be fetched ({type(error).__name__})"
            ) from None
        except ValueError as error:
            raise IapRefusedError(_reason(str(error))) from None
        if claims.get("iss") != ISSUER:
            raise IapRefusedError("wrong_issuer")
        email = claims.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise IapRefusedError("no_email")
        # Accounts from an external identity provider come as "securetoken.google.com/…:name".
        return email.rsplit(":", 1)[-1].strip().lower()


def _reason(message: str) -> str:
    """Name why google-auth refused a token, without quoting the token or its claims."""
    lowered = message.lower()
    for needle, reason in (
        ("expired", "expired"),
        ("audience", "wrong_audience"),
        ("too early", "not_yet_valid"),
        ("signature", "bad_signature"),
        ("certificate for key id", "unknown_key"),
    ):
        if needle in lowered:
            return reason
    return "malformed"
