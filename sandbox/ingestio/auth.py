"""Who may call the Ingest.io API: the version it asks for and its bearer JWT.

Every API call (all but ``part_put``, which its signature authorises: :mod:`.uploads`) needs
``Accept: application/vnd.ingest.v1+json`` (docs: versioning; else 406) and ``Authorization:
Bearer <JWT>``: an HS256 JWT signed with the ``jwt_secret`` option, whose ``exp`` is in the
future and whose ``network_id`` is the emulator's one network (else 401). :func:`mint_token`
makes such tokens (and :func:`~.jobs.default_profile_id` names the profile) without a running
sandbox; ``env()`` hands the fleet one valid for ten years.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from ..web import Request
from .api import ACCEPT

DEFAULT_SECRET = "sandbox-ingestio-secret"
DEFAULT_NETWORK = "4a7d1ed4-14c7-4a8b-9b3e-5e3b1f0c2d66"
TOKEN_LIFETIME = 10 * 365 * 24 * 3600  # the token env() hands out


def mint_token(secret: str, *, exp: int, network_id: str = DEFAULT_NETWORK, sub: str | None = None) -> str:
    """An HS256 JWT ``{"sub", "network_id", "exp"}`` as the emulator accepts it when
    ``secret`` is its ``jwt_secret`` (``sub`` defaults to the network's user), so a test can
    make the token before the sandbox runs, or an expired or foreign one."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"sub": sub or default_user_id(network_id), "network_id": network_id, "exp": exp}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def default_user_id(network_id: str = DEFAULT_NETWORK) -> str:
    """The user a network's minted tokens speak for (their ``sub``)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ingestio:{uuid.UUID(network_id)}:user"))


class _BadToken(Exception):
    """The bearer token is not acceptable; the message says why (it goes into the 401)."""


class Tokens:
    """The bearer JWT's check, mixed into the emulator (it reads ``jwt_secret`` and ``network_id``)."""

    def _claims(self, req: Request) -> dict[str, Any]:
        """The verified claims of the request's bearer JWT, else :class:`_BadToken`."""
        scheme, _, token = (req.header("Authorization") or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _BadToken("missing bearer token")
        parts = token.split(".")
        if len(parts) != 3:
            raise _BadToken("malformed token")
        try:
            header, claims, signature = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1])), _unb64(parts[2])
        except ValueError:  # binascii.Error, UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise _BadToken("malformed token") from None
        if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
            raise _BadToken("token must be an HS256 JWT")
        expected = hmac.new(self.jwt_secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            raise _BadToken("invalid token signature")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise _BadToken("token has no exp claim")
        if exp <= time.time():
            raise _BadToken("token expired")
        if claims.get("network_id") != self.network_id:
            raise _BadToken("token is not for this network")
        return claims


def _accepts(accept: str | None) -> bool:
    """Whether an ``Accept`` header names version 1 of the API (parameters such as ``q`` ignored)."""
    return any(item.split(";")[0].strip().lower() == ACCEPT for item in (accept or "").split(","))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
