"""Resumable ranged PUT: one URL, the file sent in chunks with ``Content-Range``
(Ittybit's resumable uploads: 202 for each chunk, 201 with the created file at the end).

The acknowledged offset is the whole session: it is checkpointed after every chunk, so a
new worker resumes where the provider's last 202 left off. When the provider says the
offset is elsewhere (409 with ``Upload-Offset``, e.g. after a chunk whose answer was lost)
the upload resynchronises instead of failing. Memory is one chunk.

Example::

    up = RangedUpload(client, url, fileobj, size=size, offset=job.upload["offset"], chunk_size=16 << 20)
    while not up.done:
        answer = up.send_chunk()       # the final 201's JSON when the upload completes
"""

from __future__ import annotations

from typing import IO, Any

from tasks.errors import TransientError
from tasks.http import Http


class RangedUpload:
    def __init__(self, http: Http, url: str, fileobj: IO[bytes], *, size: int, offset: int,
                 chunk_size: int, headers: dict[str, str] | None = None):
        self.http, self.url, self.file = http, url, fileobj
        self.size, self.offset, self.chunk_size = size, offset, chunk_size
        self.headers = headers or {}
        self.result: Any = None

    @property
    def done(self) -> bool:
        return self.result is not None

    def send_chunk(self) -> Any:
        """PUT the next chunk; returns the provider's final answer (JSON) once complete."""
        end = min(self.offset + self.chunk_size, self.size) - 1
        self.file.seek(self.offset)
        data = self.file.read(end - self.offset + 1)
        resp = self.http.request("PUT", self.url, data=data, allow=(409,), headers={
            **self.headers, "Content-Range": f"bytes={self.offset}-{end}/{self.size}",
            "Content-Type": "application/octet-stream"})
        if resp.status_code == 409:
            where = resp.headers.get("Upload-Offset")
            if where is None:
                raise TransientError("the provider refused the chunk's offset and did not say its own", status=409)
            self.offset = int(where)
            return None
        if resp.status_code == 201:
            self.offset = self.size
            self.result = resp.json()
            return self.result
        self.offset = end + 1
        return None
