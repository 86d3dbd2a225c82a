"""Brightcove Once: the request built from an intent is checked against Once's own schema at
submit, and each schema error names the intent field it came from (pure logic)."""

from __future__ import annotations

import pytest

from tasks.config import Settings
from tasks.intent import Intent, IntentError
from tasks.providers.once import build_body, schema_errors

URL = "https://cdn.example.com/a.mp4"
CHANNEL = "0f0e0d0c-0b0a-0908-0706-050403020100"


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env({"INGEST_ONCE_API_KEY": "once-key-123456", "INGEST_ONCE_DOMAIN_ID": "d" * 36,
                              "INGEST_ONCE_CATALOG_ID": "c" * 36})


def refused(settings: Settings, **fields) -> IntentError:
    with pytest.raises(IntentError) as info:
        Intent(provider="once", source=fields.pop("source", URL), **fields).validate(settings)
    return info.value


def test_a_full_intent_builds_a_valid_request(settings: Settings) -> None:
    options = {"publicationRules": [{"channel": CHANNEL, "startDate": 0, "endDate": 2000000000,
                                     "countryRules": [{"countryCode": "US", "isDenied": False}]}],
               "cuePoints": [{"valueIn": 30, "unit": "Seconds"}]}
    valid = Intent(provider="once", source=URL, title="Launch", description="Keynote", tags=["news"],
                   metadata={"show": "daily"}, idempotency_key="order-1", options=options).validate(settings)
    body = build_body(foreign_key="order-1", source_url=valid.source, title=valid.title,
                      description=valid.description, tags=valid.tags, metadata=valid.metadata, options=valid.options)
    assert body["foreignKey"] == "order-1" and body["media"] == {"sourceURL": URL}
    assert body["keywords"] == ["news"] and body["publicationRules"][0]["endDate"] == 2000000000
    assert schema_errors(body) == []


def test_the_sandbox_seed_example_is_valid_as_we_would_send_it() -> None:
    body = build_body(foreign_key="abc", source_url="s3://bucket/key.mp4", title="t", description="",
                      tags=[], metadata={}, options={"notifications": [{"target": "https://h/hook",
                                                                       "notificationType": "any"}]})
    assert schema_errors(body) == []


@pytest.mark.parametrize("fields, field, words", [
    ({"title": "x" * 255 + "y"}, "title", "title"),  # the intent's own limit (255) speaks first
    ({"title": "Launch \U0001F680"}, "title", "emoji"),
    ({"description": "great \u2764\ufe0f"}, "description", "emoji"),
    ({"options": {"publicationRules": [{"channel": CHANNEL, "startDate": 0}]}}, "options.publicationRules",
     "'endDate' is a required property"),
    ({"options": {"publicationRules": [{"channel": "short", "startDate": 0, "endDate": 1}]}},
     "options.publicationRules", "publicationRules[0].channel"),
    ({"options": {"cuePoints": [{"valueIn": 1, "unit": "Minutes"}]}}, "options.cuePoints", "cuePoints[0].unit"),
    ({"options": {"timedText": [{"media": {"sourceURL": "https://h/s.vtt"}, "timedTextType": "Karaoke",
                                 "languages": ["en"]}]}}, "options.timedText", "timedTextType"),
    ({"options": {"notifications": "[not json"}}, "options.notifications", "not valid JSON"),
    ({"options": {"folder": "x"}}, "options.folder", "not an option of once"),
])
def test_schema_errors_name_the_intent_field(settings: Settings, fields, field, words) -> None:
    err = refused(settings, **fields)
    assert err.field == field, err
    assert words in str(err)


def test_command_line_options_are_json(settings: Settings) -> None:
    valid = Intent(provider="once", source=URL, options={"cuePoints": '[{"valueIn": 5, "unit": "Seconds"}]'}
                   ).validate(settings)
    assert valid.options["cuePoints"] == [{"valueIn": 5, "unit": "Seconds"}]
