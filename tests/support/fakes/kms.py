"""A protocol-level fake of Cloud KMS symmetric Encrypt/Decrypt, served over the v1 REST API.

It answers what `kms_v1.KeyManagementServiceClient(transport="rest")` sends, so tests exercise
the real client: its URL transcoding, JSON encoding (camelCase fields, base64 bytes, int64 as
strings), error mapping and retries. Behaviour follows the REST reference:
https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import google_crc32c
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# The client percent-encodes the name into the path: /v1/{name=projects/*/.../cryptoKeys/**}:encrypt
# (encrypt also takes a CryptoKeyVersion name; decrypt only a CryptoKey name).
_ROUTE = re.compile(r"^/v1/(?P<name>projects/[^:]+):(?P<method>encrypt|decrypt)$")
_KEY_NAME = re.compile(r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")
_VERSION_SUFFIX = re.compile(r"^(?P<key>.+)/cryptoKeyVersions/(?P<version>[^/]+)$")

_PRIMARY_VERSION = "1"
_NONCE_BYTES = 12
# Limits for SOFTWARE keys from the EncryptRequest reference.
_MAX_PLAINTEXT_BYTES = 64 * 1024
_MAX_AAD_BYTES = 64 * 1024
_PROTECTION_LEVEL_SOFTWARE = 1
# The real service's wording: the first for a wrong key, AAD or tag, the second for garbage.
_DECRYPTION_FAILED = "Decryption failed: verify that 'name' refers to the correct CryptoKey."
_CIPHERTEXT_INVALID = "Decryption failed: the ciphertext is invalid."


class KmsError(Exception):
    """An error the fake answers with, in Google's JSON error shape."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


def _invalid(message: str) -> KmsError:
    return KmsError(400, "INVALID_ARGUMENT", message)


def _crc32c(data: bytes) -> int:
    return google_crc32c.value(data)


def _decode_bytes(body: dict[str, Any], field: str) -> bytes:
    try:
        return base64.b64decode(body.get(field, ""), validate=True)
    except (binascii.Error, TypeError) as exc:
        raise _invalid(f"Invalid value at '{field}': not valid base64") from exc


def _checksum(body: dict[str, Any], field: str) -> int | None:
    """Read an Int64Value; JSON carries int64 as a string, though a number is accepted too."""
    value = body.get(field)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise _invalid(f"Invalid value at '{field}': not an int64") from exc


def _verify_checksum(data: bytes, expected: int | None, data_field: str, crc_field: str) -> bool:
    """Return whether a checksum was sent (and so verified); a wrong one is the caller's error."""
    if expected is None:
        return False
    if expected != _crc32c(data):
        raise _invalid(
            f"The checksum in field {crc_field} did not match the data in field {data_field}."
        )
    return True


def _encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class _Route:
    name: str
    method: str
    numeric_enums: bool


class FakeKms:
    """Cloud KMS Encrypt/Decrypt on a local port, with real AES-256-GCM under per-key secrets.

    Counters count every encrypt/decrypt request that arrives, failed ones included, so a test
    can see retries.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, AESGCM] = {}
        self._calls = {"encrypt": 0, "decrypt": 0}
        self._unavailable = False
        self._corrupt_responses = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on a free port of 127.0.0.1 and return the endpoint URL."""
        if self._server is not None:
            raise RuntimeError("FakeKms is already running")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-kms", daemon=True
        )
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        """Stop serving; keys survive, so a restarted fake still decrypts old ciphertexts."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeKms is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeKms:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- test controls --------------------------------------------------------------------

    def create_key(self, name: str) -> str:
        """Create a symmetric ENCRYPT_DECRYPT CryptoKey (primary version 1) and return its name."""
        if not _KEY_NAME.match(name):
            raise ValueError(f"not a CryptoKey name: {name!r}")
        with self._lock:
            if name in self._keys:
                raise ValueError(f"CryptoKey already exists: {name}")
            self._keys[name] = AESGCM(AESGCM.generate_key(bit_length=256))
        return name

    @property
    def calls(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls = dict.fromkeys(self._calls, 0)

    def set_unavailable(self, unavailable: bool) -> None:
        """Answer every request with 503 UNAVAILABLE while set, like a KMS outage."""
        self._unavailable = unavailable

    def set_corrupt_responses(self, corrupt: bool) -> None:
        """Flip a bit in returned ciphertext/plaintext, keeping the checksum of the original.

        This is the in-transit corruption that the response CRC32C fields exist to catch.
        """
        self._corrupt_responses = corrupt

    # -- protocol -------------------------------------------------------------------------

    def answer(self, path: str, raw_body: bytes) -> dict[str, Any]:
        """Answer one POST or raise KmsError."""
        request = _parse_route(path)
        if request is not None:
            with self._lock:
                self._calls[request.method] += 1
        # An outage answers before anything is looked at, whatever the request.
        if self._unavailable:
            raise KmsError(503, "UNAVAILABLE", "The service is currently unavailable.")
        if request is None:
            raise KmsError(
                404, "NOT_FOUND", f"The requested URL {urlsplit(path).path} was not found."
            )
        body = _parse_body(raw_body)
        if request.method == "encrypt":
            response = self._encrypt(request.name, body)
        else:
            response = self._decrypt(request.name, body)
        response["protectionLevel"] = (
            _PROTECTION_LEVEL_SOFTWARE if request.numeric_enums else "SOFTWARE"
        )
        return response

    def _key(self, name: str) -> AESGCM:
        with self._lock:
            key = self._keys.get(name)
        if key is None:
            raise KmsError(404, "NOT_FOUND", f"Resource '{name}' was not found")
        return key

    def _encrypt_key(self, name: str) -> tuple[str, AESGCM]:
        """Resolve a CryptoKey or CryptoKeyVersion name to (key name, cipher)."""
        match = _VERSION_SUFFIX.match(name)
        if match is None:
            return name, self._key(name)
        key_name = match["key"]
        key = self._key(key_name)
        if match["version"] != _PRIMARY_VERSION:
            raise KmsError(404, "NOT_FOUND", f"Resource '{name}' was not found")
        return key_name, key

    def _encrypt(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        key_name, key = self._encrypt_key(name)
        plaintext = _decode_bytes(body, "plaintext")
        aad = _decode_bytes(body, "additionalAuthenticatedData")
        if not plaintext:
            raise _invalid("Plaintext is required.")
        if len(plaintext) > _MAX_PLAINTEXT_BYTES:
            raise _invalid(f"The plaintext must be no larger than {_MAX_PLAINTEXT_BYTES} bytes.")
        if len(aad) > _MAX_AAD_BYTES:
            raise _invalid(
                f"The additional_authenticated_data must be no larger than {_MAX_AAD_BYTES} bytes."
            )
        verified_plaintext = _verify_checksum(
            plaintext, _checksum(body, "plaintextCrc32c"), "plaintext", "plaintext_crc32c"
        )
        verified_aad = _verify_checksum(
            aad,
            _checksum(body, "additionalAuthenticatedDataCrc32c"),
            "additional_authenticated_data",
            "additional_authenticated_data_crc32c",
        )
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = nonce + key.encrypt(nonce, plaintext, aad)
        return {
            "name": f"{key_name}/cryptoKeyVersions/{_PRIMARY_VERSION}",
            "ciphertext": _encode(self._maybe_corrupt(ciphertext)),
            "ciphertextCrc32c": str(_crc32c(ciphertext)),
            "verifiedPlaintextCrc32c": verified_plaintext,
            "verifiedAdditionalAuthenticatedDataCrc32c": verified_aad,
        }

    def _decrypt(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        key = self._key(name)
        ciphertext = _decode_bytes(body, "ciphertext")
        aad = _decode_bytes(body, "additionalAuthenticatedData")
        # DecryptResponse has no verified_* flags: a wrong checksum is always an error.
        _verify_checksum(
            ciphertext, _checksum(body, "ciphertextCrc32c"), "ciphertext", "ciphertext_crc32c"
        )
        _verify_checksum(
            aad,
            _checksum(body, "additionalAuthenticatedDataCrc32c"),
            "additional_authenticated_data",
            "additional_authenticated_data_crc32c",
        )
        if len(ciphertext) <= _NONCE_BYTES:
            raise _invalid(_CIPHERTEXT_INVALID)
        try:
            plaintext = key.decrypt(ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:], aad)
        except InvalidTag as exc:
            raise _invalid(_DECRYPTION_FAILED) from exc
        return {
            "plaintext": _encode(self._maybe_corrupt(plaintext)),
            "plaintextCrc32c": str(_crc32c(plaintext)),
            "usedPrimary": True,
        }

    def _maybe_corrupt(self, data: bytes) -> bytes:
        if not self._corrupt_responses or not data:
            return data
        return bytes([data[0] ^ 0x01]) + data[1:]


def _parse_route(path: str) -> _Route | None:
    url = urlsplit(path)
    match = _ROUTE.match(unquote(url.path))
    if match is None:
        return None
    # The client asks for integer enums with `$alt=json;enum-encoding=int`.
    alt = parse_qs(url.query).get("$alt", [""])[0]
    return _Route(match["name"], match["method"], "enum-encoding=int" in alt)


def _parse_body(raw_body: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw_body or b"{}")
    except ValueError as exc:
        raise _invalid("Invalid JSON payload received.") from exc
    if not isinstance(body, dict):
        raise _invalid("Invalid JSON payload received.")
    return body


def handler_for(fake: FakeKms) -> type[BaseHTTPRequestHandler]:
    """Return the HTTP handler that serves `fake`: a second server may serve the same keys."""

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0 closes each connection, so after stop() no pooled keep-alive connection is
        # still served by a leftover handler thread.
        protocol_version = "HTTP/1.0"

        def do_POST(self) -> None:
            raw_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                self._send(200, fake.answer(self.path, raw_body))
            except KmsError as error:
                self._send(error.code, error.body())

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Stay quiet: test output should show failures, not one line per request."""

    return Handler
