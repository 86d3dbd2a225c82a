"""What every Brightcove API answers alike: its error format; and the JSON bodies and times of its calls.

Errors are JSON arrays ``[{"error_code": "...", "message": "..."}]`` everywhere, injected
ones too (B1/B2/B9); codes and messages follow Brightcove's CMS and DI error references:

* 401 ``UNAUTHORIZED`` "Permission denied." (no, unknown or malformed token) or "Access
  token expired."; 403 ``ACCESS_DENIED`` for an account other than the configured one;
* CMS: 422 ``VALIDATION_ERROR`` "custom_fields.<f>: ILLEGAL_FIELD" for a custom field the
  account does not define (the CMS reference's example body; ``ILLEGAL_VALUE`` for a value
  outside an enum field's ``enum_values``, *assumed*); the defined fields are the
  ``custom_fields`` option (CLI ``--brightcove-custom-fields``, default
  :data:`DEFAULT_CUSTOM_FIELDS`), served by ``GET /video_fields`` in the reference's shape;
  404 ``RESOURCE_NOT_FOUND`` "Resource does not exist."; 409 ``REFERENCE_ID_IN_USE``
  "reference id <x> is already in use"; 400 ``BAD_VALUE`` (unparsable body, or
  "Unrecognized field in the submitted data: <f>"); 422 ``ILLEGAL_FIELD`` "<field>: <rule>";
* DI: 415 ``UNSUPPORTED_MEDIA_TYPE`` for ``upload-urls`` without ``Content-Type:
  application/json`` (the reference lists the header; the 415 is *assumed*);
  404 ``NO_SUCH_VIDEO`` "Unable to find the referenced video"; 400 ``BAD_REQUEST``
  (unparsable body, unknown field, bad ``source_name``), ``NO_SOURCE`` "Unable to find a
  source to use", ``BAD_CALLBACKS`` "Callbacks were not in expected format"; 422
  ``MALFORMED_SOURCE_URL``, ``BAD_PROTOCOL_SOURCE_URL``, ``TYPE_VIOLATION``; 409
  ``CONCURRENT_JOB`` (the emulator's code) for a second ingest request while a job of the
  video is unfinished: Brightcove's best practices say never to run duplicate jobs on one
  video (B6), and the sandbox makes that mistake visible;
* 429 ``TOO_MANY_REQUESTS`` with ``Retry-After`` from the rate limits (:mod:`.emulator`, :mod:`.cms`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from ..web import HttpError, Request, Response, json_response

#: Error codes of statuses that injected faults answer with (CMS/DI error references, B9).
FAULT_CODES = {401: "UNAUTHORIZED", 404: "RESOURCE_NOT_FOUND", 429: "TOO_MANY_REQUESTS", 500: "INTERNAL_ERROR"}


def bc_error(status: int, code: str, message: str, retry_after: int | None = None) -> HttpError:
    """A Brightcove error: ``[{"error_code": code, "message": message}]``."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return HttpError(status, [{"error_code": code, "message": message}], headers)


def _fault_error(status: int) -> Response:
    phrase = HTTPStatus(status).phrase
    return json_response([{"error_code": FAULT_CODES.get(status, HTTPStatus(status).name), "message": phrase}],
                         status)


def _json_body(req: Request, code: str) -> Any:
    """The body as JSON; Brightcove-style 400 ``code`` if it cannot be parsed."""
    try:
        return req.json()
    except HttpError as exc:
        raise bc_error(exc.status, code, "Unable to parse request body.") from None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
