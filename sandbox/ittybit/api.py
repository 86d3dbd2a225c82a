"""What every Ittybit API call shares: versions and response shapes, authentication, errors, lists.

Shapes. Ittybit's API changed shape over 2025 (providers.md §3). ``envelope`` (the
``ittybit_shape`` option's default; the seed's ``2025-01-01`` era) wraps every answer as
``{"meta": {"request_id", "org_id", "project_id", "version", "type"}, "data", "error",
"links": {"self"}}``; lists add ``limit, total, page, pages`` to ``meta`` and ``first, prev,
next, last`` page URLs to ``links``; errors are ``{"meta": {"request_id", "type": "error"},
"data": null, "error": {"message"}, "links": {}}``. ``bare`` (later versions) answers the
object or array itself and errors as ``{"kind", "message"}`` (I2). The ``shape`` entry of
the ittybit fault config switches at runtime. Only the shape of answers changes; requests
are the same in both. ``Accept-Version`` selects the version of an API call (ittybit.com/api/
versioning): ``2025-01-01`` answers in the envelope, ``2025-08-20`` and ``latest`` bare (the
values the 2025-08-20 reference lists; sdk-php v1.0.0 decodes bare answers under that pin);
without the header a call gets the default version, i.e. the ``shape`` above; any other
value is 400 ``request_invalid`` (*assumed*: Ittybit documents no answer). The state's
``api_versions`` counts API calls per value (``""`` = no header). Bare lists carry
``Has-More`` and ``Limit`` headers (ittybit.com/api/responses).

Authentication: ``Authorization: Bearer <key>`` on every API call, else 401 "Invalid API
key" (bare kind ``token_invalid``). Uploads are authorised by their signed URL instead.

Errors (message; bare ``kind``), the kinds from Ittybit's error reference (I2) where it has
one, else the emulator's choice:

* 400 ``Invalid JSON body``, ``<field> must be ...`` (``request_invalid``); ``url is
  required`` (``url_required``); ``Unsupported file type`` (``format_unsupported``) - the
  source is no MP4/MOV/Matroska/WebM container (:func:`sandbox.media.is_video_container`);
  ``Could not fetch url`` (``url_unreachable``) - no http(s) URL, or three attempts at it
  failed (the reason is logged);
* 403 ``Invalid signature`` (``signature_invalid``), ``Signature expired``
  (``signature_expired``);
* 404 ``Task not found`` (``task_not_found``), ``File not found`` (``file_not_found``);
* 409 chunk at the wrong offset (``upload_offset_mismatch``), see :mod:`.uploads` - *assumed*: only
  ``Content-Range`` 202/201 is documented (I4), the 409 and ``HEAD`` resync are this emulator's;
* injected errors: the status's reason phrase, ``Too many requests`` for 429 (kind
  ``rate_limited``; ``internal_error`` for 500, else the snake-cased status name).

Request fields (*assumed* strictness: Ittybit documents none): ``POST /tasks`` accepts
``kind, url, filename, folder, ref`` (the 2025-08-20 reference), ``POST /files`` ``url,
media_id, folder, filename, ref, metadata, label, async`` (sdk-php v1.0.0 / v0.7.4), ``POST
/webhooks/endpoints`` ``url, topics``; any other field is 400 ``unknown field …``. A task's
``webhook_url`` is 400 "no longer supported" (changelog 2025-12-01 replaced it with Webhook
Endpoints; the 400 itself is assumed).
"""

from __future__ import annotations

import hmac
import math
import secrets
import string
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..web import HttpError, Request, Response, json_response

SHAPES = ("envelope", "bare")
API_VERSION = "2025-01-01"  # the envelope era of the seed (providers.md §3)
#: ``Accept-Version`` values and the shape each answers in: ``2025-01-01`` is the envelope
#: era (ittybit.com/api/tasks/create, older page); ``2025-08-20`` and ``latest`` the values
#: the 2025-08-20 reference lists for the header, answered bare (ittybit/sdk-php v1.0.0
#: decodes bare objects and arrays under that pin). A request without the header gets the
#: default version (ittybit.com/api/versioning), here the ``shape`` option or setting.
VERSIONS = {"2025-01-01": "envelope", "2025-08-20": "bare", "latest": "bare"}
#: Body fields per endpoint: the 2025-08-20 reference (POST /tasks) and SDK v1.0.0
#: ``FilesCreateRequest`` (POST /files; ``label`` and ``async`` from SDK v0.7.4). Anything
#: else is refused with 400 - strictness is *assumed*, Ittybit documents none.
TASK_FIELDS = frozenset({"kind", "url", "filename", "folder", "ref"})
FILE_FIELDS = frozenset({"url", "media_id", "folder", "filename", "ref", "metadata", "label", "async"})
ID_ALPHABET = string.ascii_lowercase + string.digits
LIST_LIMIT, LIST_MAX = 20, 100
#: Bare-shape kinds of injected errors that differ from the snake-cased status name (I2).
FAULT_KINDS = {401: "token_invalid", 429: "rate_limited", 500: "internal_error"}


class Api:
    """Shapes, authentication and request parsing, mixed into the emulator."""

    def _shape(self) -> str:
        return self.ctx.setting("shape") or self.shape

    def _envelope(self, shape: str, data: Any, self_link: str, *, kind: str = "object",
                  meta: dict[str, Any] | None = None, links: dict[str, Any] | None = None) -> Any:
        """``data`` as the shape answers it: itself (bare), or inside the 2025-01-01 envelope."""
        if shape == "bare":
            return data
        return {
            "meta": {"request_id": _new_id("req_", 16), "org_id": f"org_{self.project}",
                     "project_id": f"prj_{self.project}", "version": API_VERSION, "type": kind, **(meta or {})},
            "data": data, "error": None, "links": {"self": self_link, **(links or {})},
        }

    def _error_body(self, shape: str, message: str, kind: str) -> dict[str, Any]:
        if shape == "bare":
            return {"kind": kind, "message": message}
        return {"meta": {"request_id": _new_id("req_", 16), "type": "error"}, "data": None,
                "error": {"message": message}, "links": {}}

    def _error(self, shape: str, status: int, message: str, kind: str,
               headers: dict[str, str] | None = None) -> HttpError:
        return HttpError(status, self._error_body(shape, message, kind), headers)

    def _api(self, req: Request) -> str:
        """Authenticate an API call; returns the shape of the ``Accept-Version`` it asked for."""
        version = (req.header("Accept-Version") or "").strip()
        with self._lock:
            self._versions_seen[version] = self._versions_seen.get(version, 0) + 1
        shape = VERSIONS.get(version) if version else self._shape()
        if shape is None:  # Ittybit documents no answer for an unknown version: assumed
            raise self._error(self._shape(), 400, f"Accept-Version {version!r} is not an API version; use one of "
                                                  f"{', '.join(VERSIONS)}", "request_invalid")
        scheme, _, token = (req.header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise self._error(shape, 401, "Invalid API key", "token_invalid")
        return shape

    def _list_response(self, req: Request, shape: str, items: list[Any], path: str) -> Response:
        """One page of ``items``: envelope ``meta``/``links``, or bare with ``Has-More``/``Limit``
        headers (ittybit.com/api/responses; its ``Link`` header is left out)."""
        limit = self._int_arg(req, "limit", LIST_LIMIT, shape)
        page = self._int_arg(req, "page", 1, shape)
        if not 1 <= limit <= LIST_MAX or page < 1:
            raise self._error(shape, 400, f"limit must be 1..{LIST_MAX} and page >= 1", "request_invalid")
        data = items[(page - 1) * limit: page * limit]
        total, pages = len(items), math.ceil(len(items) / limit)

        def page_url(n: int) -> str:
            return f"{self._base}{path}?limit={limit}&page={n}"

        if shape == "bare":
            return json_response(data, headers={"Has-More": "true" if page < pages else "false", "Limit": str(limit)})
        links = {"first": page_url(1), "prev": page_url(page - 1) if page > 1 else None,
                 "next": page_url(page + 1) if page < pages else None, "last": page_url(max(pages, 1))}
        return json_response(self._envelope(shape, data, page_url(page), kind="list", links=links,
                                            meta={"limit": limit, "total": total, "page": page, "pages": pages}))

    def _invalid(self, shape: str) -> Callable[[str], HttpError]:
        return lambda message: self._error(shape, 400, message, "request_invalid")

    def _check_fields(self, body: dict[str, Any], allowed: frozenset[str], shape: str) -> None:
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise self._invalid(shape)(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                                       f"accepted: {', '.join(sorted(allowed))}")

    def _json_body(self, req: Request, shape: str, allowed: frozenset[str] | None = None) -> dict[str, Any]:
        try:
            body = req.json()
        except HttpError as exc:
            message = "Request body too large" if exc.status == 413 else "Invalid JSON body"
            raise self._error(shape, exc.status, message, "request_invalid") from None
        if not isinstance(body, dict):
            raise self._invalid(shape)("The request body must be a JSON object")
        if allowed is not None:
            self._check_fields(body, allowed, shape)
        return body

    def _ingest_fields(self, body: dict[str, Any], shape: str) -> tuple[str, str | None, str | None, dict[str, Any]]:
        """``url``, ``filename``, ``folder``, ``metadata`` of a file or ingest-task body."""
        invalid = self._invalid(shape)
        url = body.get("url")
        if url is None or url == "":
            raise self._error(shape, 400, "url is required", "url_required")
        if not isinstance(url, str):
            raise invalid("url must be a string")
        filename = body.get("filename")
        if filename is not None:
            filename = _check_name(filename, invalid)
        metadata = body.get("metadata")
        if metadata is None:
            metadata = {}
        elif not isinstance(metadata, dict):
            raise invalid("metadata must be an object")
        return url, filename, _check_folder(body.get("folder"), invalid), metadata

    def _int_arg(self, req: Request, name: str, default: int, shape: str) -> int:
        raw = req.arg(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise self._invalid(shape)(f"{name} must be an integer") from None


def _optional_str(body: dict[str, Any], name: str, invalid: Callable[[str], HttpError]) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(f"{name} must be a string")
    return value


def _check_name(value: Any, invalid: Callable[[str], HttpError]) -> str:
    if not isinstance(value, str) or not value or "/" in value or "\\" in value or value in (".", "..") \
            or len(value) > 255:
        raise invalid("filename must be a file name of 1..255 characters without '/'")
    return value


def _check_folder(value: Any, invalid: Callable[[str], HttpError]) -> str | None:
    """``a/b`` for ``a/b``, ``/a/b/`` or ``a/b/``; None for no folder."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid("folder must be a string")
    folder = value.strip("/")
    if folder and any(part in ("", ".", "..") or "\\" in part for part in folder.split("/")):
        raise invalid("folder must be a path of names separated by '/'")
    return folder or None


def _new_id(prefix: str, length: int = 12) -> str:
    """``file_abcdefgh1234``-style ids (seed)."""
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
