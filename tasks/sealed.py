"""Secrets at rest in Redis, sealed (issue 13): what the fleet must keep for a while and must not
leave readable in Redis, its RDB/AOF files or its replicas - an upload's temporary S3
credentials and signed URLs, an OAuth access token - is encrypted with Fernet (AES-128-CBC +
HMAC-SHA256, from the ``cryptography`` package) under ``INGEST_SECRET_KEY``.

``INGEST_SECRET_KEY`` is one key or a comma-separated list: the first seals, any opens
(``MultiFernet``). To rotate: put a new key first (``ingest-fleet secret-key`` prints one), keep
the old one after it, restart every worker; once everything sealed under the old key has
expired (upload secrets live 23 h, tokens minutes) drop it. A value no key opens is treated as
gone: the upload gets a new target, the token is fetched again.

Example::

    >>> sealer = Sealer(Fernet.generate_key().decode())
    >>> sealer.open(sealer.seal("s3cr3t"))
    's3cr3t'
"""

from __future__ import annotations

import binascii

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from tasks.errors import ConfigError

VAR = "INGEST_SECRET_KEY"
FIX = "generate one with `ingest-fleet secret-key` and give the same value to every worker"

__all__ = ["VAR", "Fernet", "Sealer", "new_key"]


def new_key() -> str:
    return Fernet.generate_key().decode()


class Sealer:
    """Seals and opens the fleet's secrets at rest with the keys of ``INGEST_SECRET_KEY``."""

    def __init__(self, keys: str):
        names = [k.strip() for k in keys.split(",") if k.strip()]
        if not names:
            raise ConfigError(f"{VAR} is not set: the fleet keeps upload credentials and tokens in Redis "
                              f"only encrypted; {FIX}")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in names])
        except (ValueError, binascii.Error):
            raise ConfigError(f"{VAR} holds a value that is not a Fernet key (32 url-safe base64-encoded bytes); "
                              f"{FIX}") from None

    def seal(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def open(self, sealed: bytes | str) -> str | None:
        """The value, or None when no key opens it (sealed under a key since dropped, or damaged)."""
        try:
            return self._fernet.decrypt(sealed if isinstance(sealed, bytes) else sealed.encode()).decode()
        except InvalidToken:
            return None
