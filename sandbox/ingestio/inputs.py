"""Ingest.io inputs: the files a video is encoded from (their upload: :mod:`.uploads`).

``POST /encoding/inputs {filename, type, size}`` creates an input (state ``uploading``; its
``path``, the upload's ``key``, is ``<network>/<input id>/<filename>``). ``GET
/encoding/inputs`` (also ``GET /inputs``) lists them by ``filter`` (one of uploading, queued,
processing, error, ready: the reference's input states, which exist **only** as this filter -
the Input object has no ``status`` field, so the emulator shows none; the reference's
``video-only``, ``audio-only``, ``has-video``, ``has-audio``, ``trashed`` are not emulated, 400)
and ``search`` (case-insensitive substring of the file name; the node SDK's
``Inputs.search`` sends ``?search=…&filter=…``, the reference does not list it).
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..web import Request, Response, json_response
from .api import _body, _count, _error, _now, _string, _whole

if TYPE_CHECKING:
    from .uploads import Upload

INPUT_STATES = ("uploading", "queued", "processing", "error", "ready")


@dataclass
class Input:
    id: str
    filename: str
    type: str
    size: int
    path: str  # the upload key: <network>/<id>/<filename>
    created_at: str
    updated_at: str
    status: str = "uploading"
    upload: Upload | None = None
    signatures: Counter[int] = field(default_factory=Counter)  # part number -> signatures issued
    signed_types: dict[int, str | None] = field(default_factory=dict)  # part number -> contentType last signed
    assembled_size: int | None = None
    sha256: str | None = None


class Inputs:
    """The inputs resource, mixed into the emulator (whose :meth:`clear` declares ``_inputs``)."""

    def _create_input(self, req: Request) -> Response:
        body = _body(req)
        filename = _string(body, "filename")
        if "/" in filename or "\\" in filename or filename in (".", "..") or len(filename) > 255:
            raise _error(400, "filename must be a file name of 1..255 characters without '/'")
        mime = _string(body, "type")
        size = _whole(body, "size", minimum=1)
        now = _now()
        input_id = str(uuid.uuid4())
        inp = Input(input_id, filename, mime, size, f"{self.network_id}/{input_id}/{filename}", now, now)
        with self._lock:
            self._inputs[inp.id] = inp
            answer = self._input_json(inp)
        req.entity = inp.id
        return json_response(answer, 201)

    def _get_input(self, req: Request) -> Response:
        with self._lock:
            return json_response(self._input_json(self._input(req.params["input_id"])))

    def _list_inputs(self, req: Request) -> Response:
        with self._lock:
            items = [self._input_json(i) for i in self._filter_inputs(req)]
        return self._page(req, items)

    def _count_inputs(self, req: Request) -> Response:
        with self._lock:
            return _count(len(self._filter_inputs(req)))

    def _filter_inputs(self, req: Request) -> list[Input]:
        wanted = req.arg("filter")
        if wanted is not None and wanted not in INPUT_STATES:
            raise _error(400, f"filter must be one of {', '.join(INPUT_STATES)}")
        search = (req.arg("search") or "").lower()
        return [i for i in self._inputs.values()
                if (wanted is None or i.status == wanted) and search in i.filename.lower()]

    def _input(self, input_id: str) -> Input:
        inp = self._inputs.get(input_id)
        if inp is None:
            raise _error(404, f"input {input_id} not found")
        return inp

    def _input_json(self, i: Input) -> dict[str, Any]:
        return {
            "id": i.id, "url": f"{self._base}/encoding/inputs/{i.id}", "filename": i.filename, "type": i.type,
            "path": i.path, "size": i.size, "images": [], "network_id": self.network_id, "metadata": None,
            "created_at": i.created_at, "updated_at": i.updated_at,
        }  # no status: the reference's Input object has none (states are list filters only)

    def _input_state(self, i: Input) -> dict[str, Any]:
        u = i.upload
        upload = None if u is None else {
            "type": u.type, "uploadId": u.upload_id, "size": u.size, "pieceSize": u.piece_size,
            "pieceCount": u.piece_count, "state": u.state,
            "parts": {str(n): {"size": p.size, "etag": p.etag, "puts": p.puts, "bytes_received": p.bytes_received}
                      for n, p in sorted(u.parts.items())},
        }
        return {**self._input_json(i), "status": i.status, "upload": upload,
                "signatures": {str(n): c for n, c in sorted(i.signatures.items())},
                "signed_types": {str(n): t for n, t in sorted(i.signed_types.items())},
                "aborted": u is not None and u.state == "aborted",
                "completed": u is not None and u.state == "completed",
                "assembled_size": i.assembled_size, "sha256": i.sha256}

    def _set_input_status(self, inp: Input, status: str) -> None:
        inp.status, inp.updated_at = status, _now()
