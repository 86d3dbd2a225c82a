"""Pure pieces of the Ingest.io adapter: headers, the token's expiry, part streaming,
the webhook signature and the provider's error text."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json

import requests

from tasks.config import AccountConfig
from tasks.providers.ingestio import VND, IngestioAdapter, _PartReader, jwt_expiry


def _jwt(claims: dict) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(b'{}')}.{b64(json.dumps(claims).encode())}.{b64(b'sig')}"


def test_every_api_call_carries_the_bearer_and_the_versioned_accept_header() -> None:
    account = AccountConfig("ingestio", "default", "https://api.ingest.io", "tok", rate=0, burst=1)
    assert IngestioAdapter().auth_headers(account) == {"Authorization": "Bearer tok",
                                                       "Accept": "application/vnd.ingest.v1+json"}
    assert VND == "application/vnd.ingest.v1+json"


def test_the_tokens_expiry_is_read_without_verifying_it() -> None:
    assert jwt_expiry(_jwt({"exp": 1700000000})) == 1700000000
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry(_jwt({"sub": "x"})) is None


def test_a_part_is_streamed_in_blocks_and_hashed() -> None:
    data = bytes(range(256)) * 20_000  # 5,120,000 bytes
    reader = _PartReader(io.BytesIO(data), 1000, 3_000_000)
    assert len(reader) == 3_000_000
    blocks = []
    while chunk := reader.read(8192 * 300):
        assert len(chunk) <= _PartReader.BLOCK
        blocks.append(chunk)
    assert b"".join(blocks) == data[1000:3_001_000]
    assert reader.md5.hexdigest() == hashlib.md5(data[1000:3_001_000]).hexdigest()


def test_the_webhook_signature_is_hmac_sha1_of_the_raw_body() -> None:
    adapter, raw = IngestioAdapter(), b'{"event": "jobs.complete"}'
    good = hmac.new(b"hook-secret", raw, hashlib.sha1).hexdigest()
    assert adapter.webhook_verified("hook-secret", {"x-ingest-signature": good}, raw)
    assert adapter.webhook_verified("hook-secret", {"x-ingest-signature": good.upper()}, raw)
    assert not adapter.webhook_verified("other", {"x-ingest-signature": good}, raw)
    assert not adapter.webhook_verified("hook-secret", {"x-ingest-signature": good}, raw + b" ")
    assert not adapter.webhook_verified("hook-secret", {}, raw)
    payload = {"event": "jobs.complete", "event_object": {"data": {"id": "j1", "video": "v1"}}}
    assert adapter.webhook_refs(payload) == ["j1", "v1"]
    assert adapter.webhook_refs({"event": "x"}) == []
    assert adapter.webhook_is_relevant(payload) and not adapter.webhook_is_relevant({"event": "inputs.complete"})


def _response(status: int, body: bytes) -> requests.Response:
    resp = requests.Response()
    resp.status_code, resp._content = status, body
    return resp


def test_the_providers_own_message_is_kept() -> None:
    adapter = IngestioAdapter()
    assert adapter.error_text(_response(400, b'{"errors": ["title is required"]}')) == "title is required"
    assert adapter.error_text(_response(409, b'{"errors": [{"message": "a"}, {"message": "b"}]}')) == "a; b"
    assert adapter.error_text(_response(429, b"")) == "HTTP 429"


class _StubCtx:
    """Just enough of a StepContext for one poll: every call answers ``answers`` in turn."""

    def __init__(self, *answers: bytes):
        from tasks.jobstore import Job

        self.job = Job(id="j1", provider="ingestio", account="default", source="/x.mp4", mode="push", title="t",
                       provider_ids={"encoding_job_id": "e1"})
        self.account = AccountConfig("ingestio", "default", "http://io", "token", rate=0, burst=1)
        self._answers = list(answers)

    def http(self, _kind: str):
        return self

    def request(self, method: str, url: str, **kwargs):
        return _response(200, self._answers.pop(0))


def test_an_undocumented_job_answer_is_recorded_once_and_never_ends_the_wait() -> None:
    """N3: ``GET /encoding/jobs/{id}`` is assumed (the SDK's getById); an answer without the
    documented status 0/1/10 is kept in the history once and counts as in progress."""
    adapter = IngestioAdapter()
    ctx = _StubCtx(b'{"state": "encoding"}', b'{"state": "encoding"}', b'["odd"]', b'{"status": 1, "progress": 100}')
    assert [adapter.poll_status(ctx).state for _ in range(4)] == ["processing"] * 3 + ["ready"]
    seen = [h for h in ctx.job.history if h["event"] == "provider.unexpected"]
    assert [h["answer"] for h in seen] == ['{"state": "encoding"}', '{"unexpected": "[\'odd\']"}']
