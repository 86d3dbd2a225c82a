"""Credentials inside source URLs (issue 13): ``https://user:pass@host/...``, a presigned
URL's signature or token in its query, ``sftp://user:pass@...``. Such a URL is kept sealed
(by the fleet: tasks.sealed) and shown everywhere with those parts masked; the rest stays readable.

Example::

    >>> redacted("https://u:p4ss@cdn.example.com/a.mp4?X-Amz-Signature=ab12&x=1")
    'https://u:***@cdn.example.com/a.mp4?X-Amz-Signature=***&x=1'
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

MASK = "***"
#: Words that make a query parameter a credential, matched against the words of its name
#: (split at ``-``, ``_``, ``.`` and camelCase): AWS/GCS/Azure signatures and credentials,
#: tokens, keys, passwords - ``X-Amz-Signature``, ``AWSAccessKeyId``, ``sig``, ``api_key`` -
#: but not ``design``, ``author`` or ``keyframe``.
_SECRET_WORDS = frozenset({"sig", "signature", "token", "key", "secret", "password", "passwd", "pwd",
                           "credential", "credentials", "auth", "authorization", "policy", "apikey", "sas"})
_WORD_BREAK = re.compile(r"[-_.]|(?<=[a-z0-9])(?=[A-Z])")


def _is_secret(name: str) -> bool:
    return any(word.lower() in _SECRET_WORDS for word in _WORD_BREAK.split(name))


def secrets_in(url: str) -> list[str]:
    """The credential values ``url`` carries (its password or user-only token, secret query values)."""
    parts = urlsplit(url)
    found = []
    if parts.password:
        found.append(parts.password)
    elif parts.username:  # a bare token as the user (https://<token>@host/...)
        found.append(parts.username)
    found += [value for name, value in parse_qsl(parts.query, keep_blank_values=True)
              if value and _is_secret(name)]
    return found


def redacted(url: str) -> str:
    """``url`` with its credentials masked (unchanged when it carries none)."""
    if not secrets_in(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.username is not None:
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{parts.username}:{MASK}@{host}" if parts.password is not None else f"{MASK}@{host}"
    query = urlencode([(name, MASK if value and _is_secret(name) else value)
                       for name, value in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def secret_forms(url: str) -> list[str]:
    """Each credential of ``url`` as given and percent-encoded (how a log line may quote it)."""
    return sorted({form for value in secrets_in(url) for form in (value, quote(value, safe=""))})
