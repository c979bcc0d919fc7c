"""Cloud KMS as a Tink AEAD: the key encryption key that wraps our Tink keyset.

Tink's own GcpKmsClient builds its KMS client with no endpoint option, so it cannot reach the
local fake; this wraps a client we build ourselves, and adds the CRC32C integrity checks that
Google recommends: https://cloud.google.com/kms/docs/data-integrity-guidelines
"""

from __future__ import annotations

import re
from typing import Any

import google_crc32c
import requests
import tink
from google.api_core import exceptions as core_exceptions
from google.api_core import retry as retries
from google.auth.credentials import AnonymousCredentials
from google.cloud import kms_v1
from tink import aead

from service.errors import UnavailableError

GCP_KMS_URI_PREFIX = "gcp-kms://"
DEFAULT_TIMEOUT_SECONDS = 10.0

_KEY_NAME = re.compile(
    r"^projects/[^/]+/locations/[a-zA-Z0-9_-]{1,63}/keyRings/[a-zA-Z0-9_-]{1,63}"
    r"/cryptoKeys/[a-zA-Z0-9_-]{1,63}$"
)
# Worth another attempt within the deadline. Connection errors only reach us raw through the
# REST transport (gRPC reports them as UNAVAILABLE).
_TRANSIENT_ERRORS = (
    core_exceptions.ServiceUnavailable,
    core_exceptions.DeadlineExceeded,
    core_exceptions.InternalServerError,
    core_exceptions.TooManyRequests,
    requests.ConnectionError,
)
_UNREACHABLE_ERRORS = (
    *_TRANSIENT_ERRORS,
    core_exceptions.RetryError,
    requests.Timeout,
)


class KmsUnavailableError(UnavailableError):
    """KMS did not answer in time; unlike a TinkError, trying again later may succeed."""


def make_kms_client(endpoint: str | None) -> kms_v1.KeyManagementServiceClient:
    """Build the KMS client: production by default, or the one for an endpoint override.

    An `http://` endpoint is the local fake: REST, no credentials. Any other endpoint (an
    `https://` private or regional URL) keeps the default credentials and speaks REST, because
    the gRPC transport takes `host:port`, not a URL.
    """
    if endpoint is None:
        return kms_v1.KeyManagementServiceClient()
    credentials = AnonymousCredentials() if endpoint.startswith("http://") else None
    return kms_v1.KeyManagementServiceClient(
        transport="rest",
        client_options={"api_endpoint": endpoint},
        credentials=credentials,
    )


def key_name_from_uri(key_uri: str) -> str:
    """Return the CryptoKey resource name of a `gcp-kms://projects/...` URI (or bare name)."""
    name = key_uri.removeprefix(GCP_KMS_URI_PREFIX)
    if not _KEY_NAME.match(name):
        raise tink.TinkError(
            "KMS key must look like gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K"
        )
    return name


class KmsAead(aead.Aead):
    """Tink AEAD whose every call is a Cloud KMS Encrypt or Decrypt on one CryptoKey."""

    def __init__(
        self,
        client: kms_v1.KeyManagementServiceClient,
        key_uri: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._client = client
        self.key_name = key_name_from_uri(key_uri)
        self._timeout = timeout
        # The client's default retries UNAVAILABLE for 60 s with 60 s per attempt; a webhook
        # or a start-up check would rather fail within `timeout` overall and let its caller
        # retry later.
        self._retry = retries.Retry(
            initial=0.1,
            maximum=2.0,
            multiplier=1.3,
            predicate=retries.if_exception_type(*_TRANSIENT_ERRORS),
            timeout=timeout,
        )

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Encrypt with the key's primary version, checking integrity both ways."""
        response = self._call(
            "encrypt",
            {
                "name": self.key_name,
                "plaintext": plaintext,
                "plaintext_crc32c": _crc32c(plaintext),
                "additional_authenticated_data": associated_data,
                "additional_authenticated_data_crc32c": _crc32c(associated_data),
            },
        )
        if not response.verified_plaintext_crc32c:
            raise tink.TinkError("KMS encrypt: request corrupted in transit (plaintext)")
        if not response.verified_additional_authenticated_data_crc32c:
            raise tink.TinkError("KMS encrypt: request corrupted in transit (associated data)")
        if response.ciphertext_crc32c != _crc32c(response.ciphertext):
            raise tink.TinkError("KMS encrypt: response corrupted in transit")
        return response.ciphertext

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        """Decrypt; KMS itself rejects a request whose checksums do not match."""
        response = self._call(
            "decrypt",
            {
                "name": self.key_name,
                "ciphertext": ciphertext,
                "ciphertext_crc32c": _crc32c(ciphertext),
                "additional_authenticated_data": associated_data,
                "additional_authenticated_data_crc32c": _crc32c(associated_data),
            },
        )
        if response.plaintext_crc32c != _crc32c(response.plaintext):
            raise tink.TinkError("KMS decrypt: response corrupted in transit")
        return response.plaintext

    def _call(self, method: str, request: dict[str, Any]) -> Any:
        """Send one request; translate errors into ones that never carry the payload."""
        rpc = getattr(self._client, method)
        try:
            return rpc(request=request, retry=self._retry, timeout=self._timeout)
        except _UNREACHABLE_ERRORS as exc:
            raise KmsUnavailableError(
                f"KMS {method} on {self.key_name} did not answer: {type(exc).__name__}"
            ) from exc
        except core_exceptions.GoogleAPICallError as exc:
            # The server's message names the key and the failed check, never the data.
            raise tink.TinkError(f"KMS {method} failed: {exc.code} {exc.message}") from exc


def _crc32c(data: bytes) -> int:
    return google_crc32c.value(data)
