"""The Once adapter's reading of the Media Management API, against canned answers: what the
reference does not document is noted once in the job's history, and no poll loops."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from tasks.config import Settings
from tasks.errors import PermanentError
from tasks.jobstore import Job
from tasks.providers.once import MEDIA_PAGES_PER_POLL, OnceAdapter

BASE = "https://api.unicornmedia.com"
ITEMS = f"{BASE}/media-management-api/domains/d/catalogs/c/mediaItems"


class FakeResponse:
    def __init__(self, body, status=200):
        self.body, self.status_code, self.text = body, status, str(body)

    def json(self):
        return self.body


class FakeHttp:
    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def request(self, method, url, **kwargs):
        self.calls.append(url)
        answer = self.answers(url)
        return answer if isinstance(answer, FakeResponse) else FakeResponse(answer)


def _ctx(answers, **provider_ids):
    settings = Settings.from_env({"INGEST_ONCE_API_KEY": "k", "INGEST_ONCE_DOMAIN_ID": "d",
                                  "INGEST_ONCE_CATALOG_ID": "c", "INGEST_ONCE_NOTIFY_DEADLINE": "60"})
    job = Job(id="b" * 32, provider="once", account="default", source="https://h/a.mp4", mode="pull", title="t",
              idempotency_key="mine", state="processing", step="await",
              provider_ids={"awaiting_since": time.time(), **provider_ids})
    http = FakeHttp(answers)
    return SimpleNamespace(job=job, account=settings.account("once"), http=lambda _: http, redis=None, now=time.time), http


def _item(draft, published, key="mine"):
    return {"id": f"id-{key}", "foreignKey": key, "draftVersion": draft, "publishedVersion": published}


def test_ready_only_when_the_newest_version_is_published():
    for draft, published, state in ((1, 0, "processing"), (1, 1, "ready"), (0, 1, "ready"), (0, 0, "processing"),
                                    (2, 1, "processing")):
        ctx, _ = _ctx(lambda url, d=draft, p=published: {"results": [_item(d, p)], "prev": None, "next": None,
                                                          "totalResults": 1})
        assert OnceAdapter().poll_status(ctx).state == state, (draft, published)


def test_an_undocumented_shape_is_noted_once_and_the_job_keeps_waiting():
    old_shape = {"items": [{"foreignKey": "mine", "status": "published"}]}
    ctx, http = _ctx(lambda url: old_shape)
    for _ in range(3):
        assert OnceAdapter().poll_status(ctx).state == "processing"
    notes = [h for h in ctx.job.history if h["event"] == "once.unexpected_answer"]
    assert len(notes) == 1 and notes[0]["what"] == "collection" and "published" in notes[0]["answer"]
    assert len(http.calls) == 3  # one request a poll


def test_an_item_without_versions_is_noted_and_the_deadline_still_applies():
    ctx, _ = _ctx(lambda url: {"id": "x", "foreignKey": "mine", "status": "error"}, media_item_id="x")
    assert OnceAdapter().poll_status(ctx).state == "processing"
    assert [h["what"] for h in ctx.job.history if h["event"] == "once.unexpected_answer"] == ["item"]
    ctx.job.provider_ids["awaiting_since"] = time.time() - 61
    with pytest.raises(PermanentError, match="INGEST_ONCE_NOTIFY_DEADLINE"):
        OnceAdapter().poll_status(ctx)


def test_paging_is_bounded_per_poll_and_resumes_where_it_stopped():
    def page(url):
        n = int(url.rsplit("=", 1)[1]) if "page=" in url else 1
        results = [_item(1, 1, "mine")] if n == 15 else [_item(1, 1, f"other-{n}-{i}") for i in range(20)]
        return {"results": results, "prev": None, "next": f"{ITEMS}?page={n + 1}", "totalResults": 400}

    ctx, http = _ctx(page)
    assert OnceAdapter().poll_status(ctx).state == "processing"
    assert len(http.calls) == MEDIA_PAGES_PER_POLL
    assert OnceAdapter().poll_status(ctx).state == "ready"
    assert http.calls[MEDIA_PAGES_PER_POLL] == f"{ITEMS}?page={MEDIA_PAGES_PER_POLL + 1}"
    assert ctx.job.provider_ids["media_item_id"] == "id-mine" and "media_scan" not in ctx.job.provider_ids


def test_a_next_link_elsewhere_or_to_itself_is_not_followed():
    for following in ("https://evil.example/mediaItems?page=2", ITEMS):
        ctx, http = _ctx(lambda url, nxt=following: {"results": [], "prev": None, "next": nxt, "totalResults": 0})
        assert OnceAdapter().poll_status(ctx).state == "processing"
        assert http.calls == [ITEMS]
        assert [h["what"] for h in ctx.job.history if h["event"] == "once.unexpected_answer"] == ["next"]


def test_a_vanished_item_is_looked_up_again():
    answers = {f"{ITEMS}/gone": FakeResponse({"error": "Not Found"}, 404),
               ITEMS: {"results": [_item(1, 1)], "prev": None, "next": None, "totalResults": 1}}
    ctx, _ = _ctx(answers.__getitem__, media_item_id="gone")
    assert OnceAdapter().poll_status(ctx).state == "processing"
    assert "media_item_id" not in ctx.job.provider_ids
    assert OnceAdapter().poll_status(ctx).state == "ready"
