"""A local stand-in for Identity-Aware Proxy's signing: an ES256 key whose public half is
served over HTTP in the form IAP publishes at https://www.gstatic.com/iap/verify/public_key
({key id: PEM}), and assertions signed like the `X-Goog-IAP-JWT-Assertion` IAP adds.

The service verifies them with the real google-auth code path (fetching the keys over HTTP),
as it does in production; only the signer and the URL are ours.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://cloud.google.com/iap"
AUDIENCE = "/projects/123456789/locations/europe-west1/services/intake-portal"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class IapSigner:
    """An ES256 signing key with a key id, signing IAP-shaped assertions."""

    def __init__(self, key_id: str = "iap-test-key-1") -> None:
        self.key_id = key_id
        self._key = ec.generate_private_key(ec.SECP256R1())

    def public_pem(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def assertion(
        self,
        email: str,
        audience: str = AUDIENCE,
        issued_at: float | None = None,
        lifetime: int = 600,
        **claims: Any,
    ) -> str:
        """Sign a header value as IAP would for `email`."""
        now = int(issued_at if issued_at is not None else time.time())
        header = {"alg": "ES256", "typ": "JWT", "kid": self.key_id}
        payload = {
            "iss": ISSUER,
            "aud": audience,
            "sub": f"accounts.google.com:{abs(hash(email))}",
            "email": email,
            "iat": now,
            "exp": now + lifetime,
            **claims,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS: raw r || s
        return f"{signing_input}.{_b64(signature)}"


class IapKeyServer:
    """Serve signers' public keys as IAP's key endpoint does, on a free loopback port."""

    def __init__(self, *signers: IapSigner) -> None:
        keys = {signer.key_id: signer.public_pem() for signer in signers}
        body = json.dumps(keys).encode()
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.requests += 1
                if self.path != "/iap/verify/public_key":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def certs_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/iap/verify/public_key"

    def __enter__(self) -> IapKeyServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
