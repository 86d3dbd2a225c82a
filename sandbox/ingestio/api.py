"""The conventions every Ingest.io resource shares: JSON bodies, errors, counts and pages.

JSON bodies may come as ``application/vnd.ingest.v1+json`` (the JS SDK) or
``application/json`` (else 415); an empty body counts as ``{}``. Ids are UUID4 strings,
times RFC 3339 (UTC, microseconds).

Errors are ``{"errors": ["<message>"]}`` (not documented; the JS SDK looks for ``errors``),
injected ones with the status's reason phrase; 429s have an empty body. 400 names the
field (``title is required``, ``size must be an integer >= 1``), 404 the unknown id, 409
the conflict. (The signed part PUT answers in S3's format instead, see :mod:`.uploads`.)

Lists (videos, inputs, jobs, hooks, profiles) are pages, oldest first (docs: pagination):
``page_size`` items (fault setting, default 10) unless a ``Range: items <first>-<last>``
header asks for fewer; the answer carries ``Content-Range: items <first>-<last>/<total>``
(``items */<total>`` for an empty page) and, when more remain, is a **206** with
``Next-Range: items <next_first>-<next_last>``, which the client sends back verbatim as
``Range``. A malformed Range is 416; one past the end is an empty 200. Counts
(``HEAD`` on a list) answer 204 with ``Resource-Count``. What each list filters by is said
with its resource.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from ..web import HttpError, Request, Response, json_response

ACCEPT = "application/vnd.ingest.v1+json"
JSON_TYPES = (ACCEPT, "application/json")
RANGE = re.compile(r"items\s+(\d+)-(\d+)")


class Pages:
    """Pagination, mixed into the emulator (it reads the ``page_size`` setting)."""

    def _page(self, req: Request, items: list[dict[str, Any]]) -> Response:
        """One page of ``items`` as the ``Range`` header asks (the first page if none): 200,
        or 206 + ``Next-Range`` while more remain."""
        size = self.ctx.setting("page_size")
        total = len(items)
        asked = req.header("Range")
        if asked is None:
            first, last = 0, size - 1
        else:
            match = RANGE.fullmatch(asked.strip())
            if match is None or int(match.group(1)) > int(match.group(2)):
                raise _error(416, "Range must look like 'items <first>-<last>'", {"Content-Range": f"items */{total}"})
            first, last = int(match.group(1)), int(match.group(2))
            last = min(last, first + size - 1)
        page = items[first:last + 1]
        if not page:
            return json_response([], headers={"Content-Range": f"items */{total}"})
        end = first + len(page) - 1
        headers = {"Content-Range": f"items {first}-{end}/{total}"}
        if end + 1 >= total:
            return json_response(page, headers=headers)
        headers["Next-Range"] = f"items {end + 1}-{end + last - first + 1}"
        return json_response(page, 206, headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> HttpError:
    return HttpError(status, {"errors": [message]}, headers)


def _count(n: int) -> Response:
    return Response(204, headers={"Resource-Count": str(n)})


def _body(req: Request) -> dict[str, Any]:
    """The JSON object of a request body (``{}`` when empty); 415 for a non-JSON Content-Type."""
    body = _json_body(req, {})
    if not isinstance(body, dict):
        raise _error(400, "the request body must be a JSON object")
    return body


def _json_body(req: Request, empty: Any) -> Any:
    """The JSON value of a request body (``empty`` when there is none); 415 for a non-JSON Content-Type."""
    content_type = (req.header("Content-Type") or "").split(";")[0].strip().lower()
    if content_type and content_type not in JSON_TYPES:
        raise _error(415, f"Content-Type must be {ACCEPT}")
    if req.content_length == 0:
        return empty
    try:
        return req.json()
    except HttpError as exc:
        raise _error(exc.status, "request body too large" if exc.status == 413 else "invalid JSON body") from None


def _string(body: dict[str, Any], name: str, *, required: bool = True, empty: bool = False) -> Any:
    """Field ``name`` as a string (None if absent and not required); 400 naming it otherwise."""
    value = body.get(name)
    if value is None:
        if required:
            raise _error(400, f"{name} is required")
        return None
    if not isinstance(value, str) or (not value and not empty):
        raise _error(400, f"{name} must be a {'' if empty else 'non-empty '}string")
    return value


def _whole(body: dict[str, Any], name: str, *, minimum: int) -> int:
    value = body.get(name)
    if value is None:
        raise _error(400, f"{name} is required")
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _error(400, f"{name} must be an integer >= {minimum}")
    return value


def _now() -> str:
    """RFC 3339, UTC, microseconds: ``2016-10-29T18:46:21.715060Z``."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
