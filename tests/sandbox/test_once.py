"""The Brightcove Once emulator over real sockets: ingest validation, processing, notifications.

One sandbox serves the whole module (``processing_seconds=0.2``) and one small HTTP server
receives the notifications; every test starts from ``POST /_sandbox/reset``.
"""

from __future__ import annotations

import copy
import hashlib
import time

import boto3
import pytest
import requests
from botocore.config import Config

from sandbox.once import DEFAULT_CATALOG, DEFAULT_DOMAIN, validate

KEY = "test-once-key"
INGEST = f"/ingest-api/{DEFAULT_DOMAIN}/catalogs/{DEFAULT_CATALOG}"
ITEMS = f"/media-management-api/domains/{DEFAULT_DOMAIN}/catalogs/{DEFAULT_CATALOG}/mediaItems"

#: The seed's example body, verbatim but for its fileserver.com URLs (set per test).
SEED_EXAMPLE = {
    "title": "Wildlife 07", "foreignKey": "wildlife07", "keywords": ["mammals", "tigers"],
    "description": "some description",
    "metadata": {"hello": "world", "foo": "bar", "PassThruMetadata": "hello world", "JobID": "someJobId"},
    "media": {"sourceURL": "http://fileserver.com/videos/Wildlife.wmv"},
    "priority": "normal",
    "publicationRules": [{
        "channel": "a8cf98a9-8946-4bd4-b97c-a2b5dbc635c5", "startDate": 1412025402, "endDate": 1601414189,
        "clientFilters": [{"variableName": "IpAddress", "value": "127.0.0.1", "filterType": "Equals",
                           "isDenied": True}],
        "countryRules": [{"countryCode": "UK", "isDenied": True}],
    }],
    "cuePoints": [{"valueIn": 10, "unit": "Seconds"}, {"valueIn": 25, "unit": "Seconds"}],
    "timedText": [
        {"media": {"sourceURL": "http://fileserver.com/filenameEN.xml"}, "timedTextType": "SUBTITLE",
         "languages": ["en"]},
        {"media": {"sourceURL": "http://fileserver.com/filenameFR.srt"}, "timedTextType": "SUBTITLE",
         "languages": ["fr"]},
        {"media": {"sourceURL": "http://fileserver.com/filenameEN.dfxp"}, "timedTextType": "CAPTION",
         "languages": ["en"]},
        {"media": {"sourceURL": "http://fileserver.com/filenamemulti.xml"}, "timedTextType": "SUBTITLE",
         "languages": ["en", "fr"], "alternateId": "Bazinga"},
    ],
    "notifications": [
        {"target": "http://fileserver.com/notification-spy/record/JessePublish"},
        {"target": "http://fileserver.com/notification-spy/record/JesseError", "notificationType": "error"},
    ],
}


MEDIA = {"clip.mp4": 400_000, "other.mp4": 300_000}
SANDBOX_OPTIONS = {"once_api_key": KEY}
PROCESSING_SECONDS = 0.2
RECEIVER_PATH = "/once-hooks"


@pytest.fixture
def api(sandbox):
    s = requests.Session()
    s.headers["X-BC-ONCE-API-KEY"] = KEY
    s.base = sandbox.url
    yield s
    s.close()


def ingest(api, body, status=200):
    r = api.post(api.base + INGEST, json=body, timeout=10)
    assert r.status_code == status, r.text
    return r.json()


def wait_item(api, foreign_key, statuses=("published", "error"), timeout=10.0):
    """The item as the sandbox's state keeps it (with ``status``, ``error``, ``sourceSha256``,
    which the API does not show), once its newest version is in one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        items = [i for i in requests.get(f"{api.base}/_sandbox/state/once", timeout=10).json()["items"]
                 if i["foreignKey"] == foreign_key]
        if items and items[0]["status"] in statuses:
            return items[0]
        assert time.monotonic() < deadline, items
        time.sleep(0.05)


def api_item(api, item_id):
    r = api.get(f"{api.base}{ITEMS}/{item_id}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def state(sandbox):
    return requests.get(f"{sandbox.url}/_sandbox/state/once", timeout=10).json()


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- tests -------------------------------------------------------------------------------


def test_env_names(sandbox):
    env = sandbox.env()
    assert env["INGEST_ONCE_API_KEY"] == KEY
    assert env["INGEST_ONCE_DOMAIN_ID"] == DEFAULT_DOMAIN
    assert env["INGEST_ONCE_CATALOG_ID"] == DEFAULT_CATALOG
    assert env["INGEST_ONCE_BASE_URL"] == sandbox.url
    assert env["INGEST_ONCE_STAGING_BUCKET"] == "once-staging"
    assert env["INGEST_ONCE_S3_ENDPOINT"] == sandbox.s3.url
    # Every setting a Once push needs (issue 11: the staging credentials were missing).
    assert env["INGEST_ONCE_STAGING_ACCESS_KEY_ID"] and env["INGEST_ONCE_STAGING_SECRET_ACCESS_KEY"]


def test_unauthorized_and_unknown_catalog(sandbox, api):
    body = {"foreignKey": "k", "media": {"sourceURL": f"{sandbox.url}/media/clip.mp4"}}
    for headers in ({}, {"X-BC-ONCE-API-KEY": "wrong"}):
        r = requests.post(sandbox.url + INGEST, json=body, headers=headers, timeout=10)
        assert (r.status_code, r.json()) == (401, {"error": "Unauthorized"})
    r = requests.get(sandbox.url + ITEMS, timeout=10)
    assert r.status_code == 401
    other = f"/ingest-api/{DEFAULT_DOMAIN}/catalogs/00000000-0000-0000-0000-000000000000"
    assert api.post(api.base + other, json=body, timeout=10).status_code == 404
    assert state(sandbox)["items"] == []


def test_valid_request_is_published_and_notified(sandbox, api, receiver, media):
    body = {"title": "Clip", "foreignKey": "clip-1", "media": {"sourceURL": f"{sandbox.url}/media/clip.mp4"},
            "notifications": [{"target": receiver.url}, {"target": receiver.url, "notificationType": "any",
                                                         "method": "put"}]}
    answer = ingest(api, body)
    assert set(answer) == {"requestId"}
    item = wait_item(api, "clip-1")
    assert item["status"] == "published" and item["draftVersion"] == 1 and item["publishedVersion"] == 1
    assert item["sourceSha256"] == sha(media / "clip.mp4") and item["title"] == "Clip" and item["error"] is None
    shown = api_item(api, item["id"])
    assert (shown["foreignKey"], shown["draftVersion"], shown["publishedVersion"]) == ("clip-1", 1, 1)
    assert "status" not in shown and "error" not in shown and "sourceSha256" not in shown
    hooks = receiver.wait_for_requests(4)  # publish (POST) + ingest, transcode, publish (PUT, in order)
    posts = [h["body"] for h in hooks if h["method"] == "POST"]
    puts = [h["body"]["event"] for h in hooks if h["method"] == "PUT"]
    assert puts == ["ingest", "transcode", "publish"]
    assert len(posts) == 1
    p = posts[0]
    assert {k: p[k] for k in ("requestId", "foreignKey", "mediaItemId", "event", "status")} == {
        "requestId": answer["requestId"], "foreignKey": "clip-1", "mediaItemId": item["id"], "event": "publish",
        "status": "success"}
    assert "timestamp" in p and "message" not in p
    time.sleep(0.1)
    st = state(sandbox)
    assert len(st["notifications_sent"]) == 4 and all(n["status"] == 200 for n in st["notifications_sent"])
    assert st["requests"][0]["valid"] is True and st["requests"][0]["requestId"] == answer["requestId"]


def test_seed_example_is_accepted_despite_its_casing(sandbox, api, receiver):
    body = copy.deepcopy(SEED_EXAMPLE)
    body["media"]["sourceURL"] = f"{sandbox.url}/media/clip.mp4"
    for t in body["timedText"]:
        t["media"]["sourceURL"] = f"{sandbox.url}/media/{t['media']['sourceURL'].rsplit('/', 1)[1]}"
    body["notifications"][0]["target"] = receiver.url + "/publish"
    body["notifications"][1]["target"] = receiver.url + "/error"
    assert validate(body) == {}
    ingest(api, body)
    assert wait_item(api, "wildlife07")["status"] == "published"
    hooks = receiver.wait_for_requests(1)
    assert [(h["path"], h["body"]["event"]) for h in hooks] == [("/once-hooks/publish", "publish")]


@pytest.mark.parametrize("change, path", [
    (lambda b: b.pop("foreignKey"), "foreignKey"),
    (lambda b: b["media"].pop("sourceURL"), "media.sourceURL"),
    (lambda b: b.update(title="x" * 256), "title"),
    (lambda b: b.update(title="Tigers \U0001F42F"), "title"),
    (lambda b: b.update(description="nice \u2764\ufe0f"), "description"),
    (lambda b: b.update(priority="urgent"), "priority"),
    (lambda b: b["notifications"][0].update(notificationType="sometimes"), "notifications[0].notificationType"),
    (lambda b: b["publicationRules"][0].pop("endDate"), "publicationRules[0].endDate"),
    (lambda b: b["publicationRules"][0].update(endDate=5), "publicationRules[0].endDate"),
    (lambda b: b["publicationRules"][0]["clientFilters"][0].update(filterType="Like"),
     "publicationRules[0].clientFilters[0].filterType"),
    (lambda b: b["cuePoints"][1].update(valueIn="25"), "cuePoints[1].valueIn"),
    (lambda b: b.update(color="red"), "color"),
    (lambda b: b["media"].update(mime="video/mp4"), "media.mime"),
])
def test_invalid_bodies_name_their_fields(sandbox, api, change, path):
    body = copy.deepcopy(SEED_EXAMPLE)
    change(body)
    answer = ingest(api, body, 400)
    assert answer["error"] == "Validation Errors" and len(answer["requestId"]) == 36
    assert list(answer["fieldErrors"]) == [path], answer
    assert answer["fieldErrors"][path] and all(isinstance(m, str) for m in answer["fieldErrors"][path])
    st = state(sandbox)
    assert st["items"] == []
    assert st["requests"][0]["valid"] is False and path in st["requests"][0]["fieldErrors"]


def test_malformed_json_and_non_object(sandbox, api):
    r = api.post(api.base + INGEST, data=b"{nope", headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and list(r.json()["fieldErrors"]) == ["body"]
    assert list(ingest(api, [1, 2], 400)["fieldErrors"]) == ["body"]


def test_s3_source_is_published_with_its_sha256(sandbox, api, media):
    env = sandbox.env()
    s3 = boto3.client("s3", endpoint_url=env["INGEST_ONCE_S3_ENDPOINT"], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test",
                      config=Config(s3={"addressing_style": "path"}))
    s3.put_object(Bucket=env["INGEST_ONCE_STAGING_BUCKET"], Key="in/other.mp4",
                  Body=(media / "other.mp4").read_bytes())
    ingest(api, {"foreignKey": "from-s3", "media": {"sourceURL": "s3://once-staging/in/other.mp4"}})
    item = wait_item(api, "from-s3")
    assert item["status"] == "published" and item["sourceSha256"] == sha(media / "other.mp4")
    ingest(api, {"foreignKey": "missing", "media": {"sourceURL": "s3://once-staging/nope.mp4"}})
    item = wait_item(api, "missing")
    assert item["status"] == "error" and "Could not fetch" in item["error"]


def test_same_foreign_key_twice_is_one_item_with_two_versions(sandbox, api, receiver, media):
    hooks = [{"target": receiver.url, "notificationType": "update"}]
    ingest(api, {"foreignKey": "twice", "media": {"sourceURL": f"{sandbox.url}/media/clip.mp4"},
                 "notifications": hooks})
    assert wait_item(api, "twice")["publishedVersion"] == 1
    ingest(api, {"foreignKey": "twice", "title": "v2", "media": {"sourceURL": f"{sandbox.url}/media/other.mp4"},
                 "notifications": hooks})
    item = wait_item(api, "twice", statuses=("processing",), timeout=1)
    assert item["draftVersion"] == 2 and item["publishedVersion"] == 1
    deadline = time.monotonic() + 10
    while (item := wait_item(api, "twice"))["publishedVersion"] != 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert item["title"] == "v2" and item["sourceSha256"] == sha(media / "other.mp4")
    listing = api.get(api.base + ITEMS, timeout=10).json()
    assert listing["totalResults"] == 1 and len(listing["results"]) == 1
    versions = state(sandbox)["items"][0]["versions"]
    assert [(v["version"], v["status"]) for v in versions] == [(1, "published"), (2, "published")]
    hooks_got = receiver.wait_for_requests(1)  # "update" fires for the second version only
    assert [(h["body"]["event"], h["body"]["version"]) for h in hooks_got] == [("publish", 2)]


def test_non_video_sends_an_error_notification(sandbox, api, receiver):
    answer = ingest(api, {"foreignKey": "notes", "media": {"sourceURL": f"{sandbox.url}/media/notes.txt"},
                          "notifications": [{"target": receiver.url, "notificationType": "error"},
                                            {"target": receiver.url}]})
    item = wait_item(api, "notes")
    assert item["status"] == "error" and item["error"] == "The source is not a video"
    shown = api_item(api, item["id"])  # the API shows no failure: the item just stays unpublished
    assert (shown["draftVersion"], shown["publishedVersion"]) == (1, 0) and "error" not in shown
    hooks = receiver.wait_for_requests(1)
    time.sleep(0.2)
    assert len(receiver.requests()) == 1  # the publish subscription hears nothing
    p = hooks[0]["body"]
    assert (p["event"], p["status"], p["message"], p["requestId"]) == (
        "error", "error", "The source is not a video", answer["requestId"])


def test_processing_fault_and_duplicates(sandbox, api, receiver):
    r = requests.put(f"{sandbox.url}/_sandbox/faults", timeout=10, json={
        "provider": "once", "notification_duplicates": True,
        "rules": [{"endpoint": "once.processing", "action": "fail"}]})
    assert r.status_code == 200, r.text
    ingest(api, {"foreignKey": "doomed", "media": {"sourceURL": f"{sandbox.url}/media/clip.mp4"},
                 "notifications": [{"target": receiver.url, "notificationType": "error", "method": "GET"}]})
    item = wait_item(api, "doomed")
    assert item["status"] == "error" and item["error"] == "Transcoding failed"
    hooks = receiver.wait_for_requests(2)
    assert all(h["method"] == "GET" and "event=error" in h["path"] for h in hooks)


def test_http_faults_apply(sandbox, api):
    r = requests.put(f"{sandbox.url}/_sandbox/faults", timeout=10,
                     json={"provider": "once", "rules": [{"endpoint": "once.ingest", "status": 503, "times": 1}]})
    assert r.status_code == 200, r.text
    body = {"foreignKey": "k", "media": {"sourceURL": f"{sandbox.url}/media/clip.mp4"}}
    assert api.post(api.base + INGEST, json=body, timeout=10).status_code == 503
    ingest(api, body)
    assert [e["status"] for e in sandbox.log.entries(endpoint="once.ingest")] == [503, 200]


def test_media_items_listing_follows_the_reference(sandbox, api):
    """BCL-API-References once-media-management-api/v1/src/media-item.js: ``results``, ``prev``,
    ``next`` (null when there is none), ``totalResults``; 20 a page; no ``status``."""
    for i in range(22):
        ingest(api, {"foreignKey": f"fk-{i:02}", "media": {"sourceURL": "ftp://nowhere/x.mp4"},
                     "keywords": ["k"]})
    page1 = api.get(api.base + ITEMS, timeout=10).json()
    assert set(page1) == {"results", "prev", "next", "totalResults"}
    assert (page1["totalResults"], len(page1["results"]), page1["prev"]) == (22, 20, None)
    assert page1["next"].endswith(ITEMS + "?page=2")
    page2 = api.get(page1["next"], timeout=10).json()
    assert [i["foreignKey"] for i in page2["results"]] == ["fk-20", "fk-21"] and page2["next"] is None
    assert page2["prev"].endswith("?page=1")
    first = page1["results"][0]
    assert set(first) == {"id", "catalogId", "domainId", "isAd", "foreignKey", "title", "draftVersion",
                          "publishedVersion"}
    assert (first["draftVersion"], first["publishedVersion"], first["isAd"]) == (1, 0, False)
    # No filter is documented: a foreignKey parameter is ignored (assumed), the listing is whole.
    assert api.get(api.base + ITEMS, params={"foreignKey": "fk-07"}, timeout=10).json()["totalResults"] == 22
    one = api_item(api, first["id"])
    assert one["foreignKey"] == "fk-00" and one["keywords"] == ["k"]
    r = api.get(f"{api.base}{ITEMS}/00000000-0000-0000-0000-000000000000", timeout=10)
    assert (r.status_code, r.json()) == (404, {"error": "Not Found"})


def test_reset_clears_and_recreates_the_staging_bucket(sandbox, api):
    ingest(api, {"foreignKey": "gone", "media": {"sourceURL": f"{sandbox.url}/media/clip.mp4"}})
    requests.post(f"{sandbox.url}/_sandbox/reset", timeout=30).raise_for_status()
    st = state(sandbox)
    assert st == {"items": [], "requests": [], "notifications_sent": []}
    assert sandbox.s3.objects("once-staging") == []
