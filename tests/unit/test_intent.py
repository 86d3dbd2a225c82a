"""Validation at the door: every refusal names the field and the fix (pure logic, no Redis)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.config import Settings
from tasks.intent import Intent, IntentError


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    root = tmp_path / "root"
    root.mkdir()
    return Settings.from_env({"INGEST_SOURCE_ROOTS": str(root), "INGEST_GCORE_API_KEY": "k" * 12})


@pytest.fixture
def video(settings: Settings) -> Path:
    path = settings.source_roots[0] / "a.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\0" * 100)
    return path


def refused(settings: Settings, **fields) -> IntentError:
    with pytest.raises(IntentError) as info:
        Intent(**{"provider": "gcore", **fields}).validate(settings)
    return info.value


def test_a_good_file_intent_is_normalised(settings: Settings, video: Path) -> None:
    valid = Intent(provider="GCore", source=str(video)).validate(settings)
    assert (valid.provider, valid.mode, valid.size, valid.title) == ("gcore", "push", 112, "a.mp4")


def test_a_good_url_intent_pulls(settings: Settings) -> None:
    valid = Intent(provider="gcore", source="https://cdn.example.com/v/clip.mov").validate(settings)
    assert (valid.mode, valid.size, valid.title) == ("pull", None, "clip.mov")


@pytest.mark.parametrize(
    "fields, field, words",
    [
        ({"provider": "vimeo", "source": "https://x/y.mp4"}, "provider",
         "choose one of: brightcove, gcore, ingestio, ittybit, once"),
        ({"source": "/definitely/missing.mp4"}, "source", "outside INGEST_SOURCE_ROOTS"),
        ({"source": "ftp://host/a.mp4"}, "source", "scheme 'ftp' is not supported"),
        ({"source": "https:///a.mp4"}, "source", "no host"),
        ({"source": "https://h/a.mp4", "title": "x" * 256}, "title", "limit is 255"),
        ({"source": "https://h/a.mp4", "title": "bad \udcff bytes"}, "title", "not valid UTF-8"),
        ({"source": "https://h/a.mp4", "title": "   "}, "title", "empty"),
        ({"source": "https://h/a.mp4", "account": "nobody"}, "account", "INGEST_GCORE__NOBODY__API_KEY"),
        ({"source": "https://h/a.mp4", "idempotency_key": "has space"}, "idempotency_key", "letters, digits"),
        ({"source": "https://h/a.mp4", "priority": "urgent"}, "priority", "high, normal, low"),
        ({"source": "https://h/a.mp4", "metadata": {"bad key": "v"}}, "metadata.bad key", "keys must be"),
    ],
)
def test_refusals_name_the_field(settings: Settings, fields, field, words) -> None:
    err = refused(settings, **fields)
    assert err.field == field
    assert words in str(err)


def test_missing_file_inside_the_roots(settings: Settings) -> None:
    err = refused(settings, source=str(settings.source_roots[0] / "nope.mp4"))
    assert err.field == "source" and "file not found" in err.message


def test_directory_and_empty_file_are_refused(settings: Settings) -> None:
    folder = settings.source_roots[0] / "dir"
    folder.mkdir()
    assert "is a directory" in refused(settings, source=str(folder)).message
    empty = settings.source_roots[0] / "empty.mp4"
    empty.touch()
    assert "is empty" in refused(settings, source=str(empty)).message


def test_symlink_escaping_the_roots_is_refused(settings: Settings, tmp_path: Path) -> None:
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"x")
    link = settings.source_roots[0] / "link.mp4"
    os.symlink(outside, link)
    assert "outside INGEST_SOURCE_ROOTS" in refused(settings, source=str(link)).message


def test_local_files_need_configured_roots(video: Path) -> None:
    bare = Settings.from_env({"INGEST_GCORE_API_KEY": "k" * 12})
    err = refused(bare, source=str(video))
    assert "INGEST_SOURCE_ROOTS is not set" in err.message


def test_unknown_intent_fields_are_refused() -> None:
    with pytest.raises(IntentError) as info:
        Intent.from_dict({"provider": "gcore", "source": "https://h/a.mp4", "titel": "typo"})
    assert info.value.field == "titel"


def test_provider_options_are_checked_by_the_provider(tmp_path: Path) -> None:
    settings = Settings.from_env({"INGEST_GCORE_API_KEY": "k" * 12, "INGEST_ITTYBIT_API_KEY": "i" * 12})
    url = "https://h/a.mp4"
    valid = Intent(provider="ittybit", source=url, options={"sync": "true", "folder": "news"}).validate(settings)
    assert valid.options == {"sync": True, "folder": "news"}
    with pytest.raises(IntentError) as info:
        Intent(provider="gcore", source=url, options={"folder": "x"}).validate(settings)
    assert info.value.field == "options.folder" and "options: origin_http_headers" in info.value.message
    with pytest.raises(IntentError) as info:
        Intent(provider="gcore", source=url, options={"origin_http_headers": "X-Key: 1"}).validate(settings)
    assert info.value.field == "options.origin_http_headers"
    with pytest.raises(IntentError) as info:
        Intent(provider="ittybit", source=url, options={"sync": 3}).validate(settings)
    assert info.value.field == "options.sync"
