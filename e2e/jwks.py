"""A JSON Web Key Set served on loopback, and JWTs signed with its key, for the e2e
tests of SecurityPolicy JWT authentication.

:class:`JwksServer` serves one RSA public key at ``/jwks.json`` on 127.0.0.1 (a port the
kernel picks) and counts the fetches; :meth:`JwksServer.token` signs RS256 tokens with
the private key, whose claims the test chooses (an expired one, another issuer).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

KEY_ID = "e2e"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class JwksServer:
    """The key set at ``uri`` while started (use as a context manager)."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self._key.public_key().public_numbers()
        self.jwks = json.dumps(
            {
                "keys": [
                    {
                        "kty": "RSA",
                        "kid": KEY_ID,
                        "alg": "RS256",
                        "use": "sig",
                        "n": _uint(numbers.n),
                        "e": _uint(numbers.e),
                    }
                ]
            }
        )
        self.fetches = 0
        body = self.jwks.encode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/jwks.json":
                    self.send_error(404)
                    return
                server.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/jwks.json"

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def token(self, *, lifetime: float = 300.0, **claims: Any) -> str:
        """An RS256 JWT with ``claims``, valid from now for ``lifetime`` seconds
        (negative: already expired)."""
        now = int(time.time())
        payload = {"iat": now, "exp": int(now + lifetime), **claims}
        header = {"alg": "RS256", "typ": "JWT", "kid": KEY_ID}
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
        signature = self._key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64(signature)}"
