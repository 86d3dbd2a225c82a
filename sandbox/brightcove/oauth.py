"""Brightcove's OAuth API: client-credential access tokens, and their check on every other call.

Authentication (providers.md §1, B3). ``POST /v4/access_token`` with ``Authorization:
Basic base64(client_id:client_secret)`` and ``grant_type=client_credentials`` (form body
or query) answers ``{"access_token", "token_type": "Bearer", "expires_in"}``; tokens live
``token_ttl`` seconds (the ``brightcove_token_ttl`` option, 300 like Brightcove, or the
``token_ttl`` of the brightcove fault config). OAuth errors are OAuth-shaped: 401
``{"error": "invalid_client", ...}``, 400 ``unsupported_grant_type``. Every other endpoint
needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from urllib.parse import parse_qs

from ..web import JSON_LIMIT, HttpError, Request, Response, json_response
from .api import bc_error

TOKEN_TTL = 300  # seconds: "expires_in": 300 (B3)


class OAuth:
    """Access tokens, mixed into the emulator (whose ``__init__`` declares ``_tokens`` and ``_tokens_issued``)."""

    def _oauth_token(self, req: Request) -> Response:
        """``POST /v4/access_token``: client credentials in Basic auth, ``grant_type`` in the body or query."""
        scheme, _, encoded = (req.header("Authorization") or "").partition(" ")
        try:
            client_id, sep, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if scheme.lower() != "basic" or not sep or not (
                hmac.compare_digest(client_id.encode(), self.client_id.encode())
                & hmac.compare_digest(secret.encode(), self.client_secret.encode())):
            raise HttpError(401, {"error": "invalid_client", "error_description": "The client credentials are invalid"})
        if req.content_length > JSON_LIMIT:
            raise HttpError(413, {"error": "invalid_request", "error_description": "Request body too large"})
        form = parse_qs(b"".join(req.iter_body()).decode("utf-8", "replace"))
        grant_type = req.arg("grant_type") or (form.get("grant_type") or [None])[0]
        if grant_type != "client_credentials":
            raise HttpError(400, {"error": "unsupported_grant_type",
                                  "error_description": "grant_type must be client_credentials"})
        ttl = self.ctx.setting("token_ttl")
        ttl = self.token_ttl if ttl is None else ttl
        token = secrets.token_urlsafe(96)
        with self._lock:
            self._tokens[token] = time.time() + ttl
            self._tokens_issued.append(token)
        return json_response({"access_token": token, "token_type": "Bearer", "expires_in": ttl})

    def _authorize(self, req: Request) -> None:
        scheme, _, token = (req.header("Authorization") or "").partition(" ")
        with self._lock:
            expires = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expires is None:
            raise bc_error(401, "UNAUTHORIZED", "Permission denied.")
        if expires <= time.time():
            raise bc_error(401, "UNAUTHORIZED", "Access token expired.")
        if req.params["account_id"] != self.account_id:
            raise bc_error(403, "ACCESS_DENIED", f"Account {req.params['account_id']} is not accessible "
                                                 "with these client credentials.")
