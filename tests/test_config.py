from __future__ import annotations

import pytest

from tasks.config import ConfigError, Settings


def test_accounts_from_the_environment() -> None:
    s = Settings.from_env({
        "INGEST_GCORE_API_KEY": "key-default", "INGEST_GCORE_BASE_URL": "http://127.0.0.1:9/",
        "INGEST_GCORE__TEAMB__API_KEY": "key-b", "INGEST_GCORE__TEAMB__RATE": "2",
    })
    assert s.accounts_of("gcore") == ["default", "teamb"]
    assert s.account("gcore").base_url == "http://127.0.0.1:9"
    teamb = s.account("gcore", "teamb")
    assert (teamb.base_url, teamb.rate) == ("http://127.0.0.1:9", 2.0)
    assert "key-b" not in repr(teamb)  # secrets stay out of reprs (and so out of logs)


def test_visibility_timeout_must_cover_a_slice() -> None:
    with pytest.raises(ConfigError, match="INGEST_VISIBILITY_TIMEOUT"):
        Settings.from_env({"INGEST_SLICE_SECONDS": "60", "INGEST_VISIBILITY_TIMEOUT": "100"})


def test_bad_numbers_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="INGEST_SLICE_SECONDS"):
        Settings.from_env({"INGEST_SLICE_SECONDS": "soon"})


def test_unconfigured_account_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="INGEST_GCORE_API_KEY"):
        Settings.from_env({}).account("gcore")


def test_a_single_put_never_outgrows_one_slice_at_the_slowest_uplink() -> None:
    from tasks.transfer import single_put_max

    shipped = Settings.from_env({})
    assert single_put_max(shipped, 100_000_000) == 60_000_000  # 60 s at 1 MB/s, not 100 MB
    assert single_put_max(shipped, 5 * 1024 * 1024) == 5 * 1024 * 1024  # a lower setting stands
    slow = Settings.from_env({"INGEST_SLICE_SECONDS": "20", "INGEST_MIN_UPLOAD_RATE": "250000"})
    assert single_put_max(slow, 100_000_000) == 5_000_000
    with pytest.raises(ConfigError, match="INGEST_MIN_UPLOAD_RATE"):
        Settings.from_env({"INGEST_MIN_UPLOAD_RATE": "0"})


def test_ittybit_api_version_is_pinned_and_checked() -> None:
    s = Settings.from_env({"INGEST_ITTYBIT_API_KEY": "k", "INGEST_ITTYBIT__B__API_KEY": "k2",
                           "INGEST_ITTYBIT__B__API_VERSION": "latest"})
    assert s.account("ittybit").setting("API_VERSION") == "2025-08-20"  # as ittybit/sdk-php v1.0.0 pins it
    assert s.account("ittybit", "b").setting("API_VERSION") == "latest"
    with pytest.raises(ConfigError, match="INGEST_ITTYBIT_API_VERSION='v2'"):
        Settings.from_env({"INGEST_ITTYBIT_API_KEY": "k", "INGEST_ITTYBIT_API_VERSION": "v2"})
