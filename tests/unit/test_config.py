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
    # ... and the hard time limit (slice + 2 x grace): a task still running is not redelivered
    with pytest.raises(ConfigError, match=r"hard time limit.*INGEST_STEP_GRACE"):
        Settings.from_env({"INGEST_SLICE_SECONDS": "60", "INGEST_STEP_GRACE": "150", "INGEST_VISIBILITY_TIMEOUT": "300"})
    shipped = Settings.from_env({})
    assert (shipped.slice_seconds, shipped.step_grace, shipped.lease_seconds) == (60, 30, 90)


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


# --- provider declarations (tasks.declare) -----------------------------------------------------

def test_each_adapter_declares_what_the_configuration_needs() -> None:
    from tasks.config import declared
    from tasks.declare import BUDGET_SETTINGS
    from tasks.providers import ADAPTERS, REGISTRY

    for provider in REGISTRY:
        adapter, names = ADAPTERS[provider], declared(provider)
        assert len(names) == len(adapter.account_settings), f"{provider} declares a setting twice"
        assert {"BASE_URL", adapter.credential, *BUDGET_SETTINGS} <= set(names), provider
        assert names[adapter.credential].secret, f"{provider}'s credential must be declared secret"
        assert adapter.title, f"{provider} has no title for listings"
        for spec in names.values():
            if spec.default:
                spec.check(f"{provider}.{spec.name}", spec.default)  # every default passes its own check


def test_a_setting_no_adapter_declares_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="INGEST_GCORE_APIKEY is not a setting of gcore; its settings are API_KEY"):
        Settings.from_env({"INGEST_GCORE_APIKEY": "k"})
    with pytest.raises(ConfigError, match="INGEST_GCORE__TEAMB__RATE_LIMIT is not a setting of gcore"):
        Settings.from_env({"INGEST_GCORE_API_KEY": "k", "INGEST_GCORE__TEAMB__RATE_LIMIT": "2"})


@pytest.mark.parametrize(("var", "value", "message"), [
    ("INGEST_GCORE_LOCK_WAIT", "soon", "INGEST_GCORE_LOCK_WAIT='soon' is not a number"),
    ("INGEST_GCORE_RATE", "-1", "INGEST_GCORE_RATE='-1' must be a number, 0 or more"),
    ("INGEST_GCORE_BURST", "1.5", "INGEST_GCORE_BURST='1.5' must be a whole number"),
    ("INGEST_GCORE__TEAMB__SLOTS", "many", "INGEST_GCORE__TEAMB__SLOTS='many' is not a number"),
])
def test_a_malformed_value_is_refused_by_its_declared_type(var: str, value: str, message: str) -> None:
    env = {"INGEST_GCORE_API_KEY": "k", "INGEST_GCORE__TEAMB__API_KEY": "k", var: value}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env(env)


def test_typed_settings_read_as_declared() -> None:
    s = Settings.from_env({"INGEST_INGESTIO_API_KEY": "t", "INGEST_INGESTIO_PROFILE": "p",
                           "INGEST_INGESTIO_PUBLISH": "Yes", "INGEST_GCORE_API_KEY": "k",
                           "INGEST_GCORE_LOCK_WAIT": "2.5"})
    assert s.account("ingestio").flag("PUBLISH") is True
    assert s.account("ingestio").whole("SINGLE_PUT_MAX") == 5 * 1024 * 1024  # the declared default
    assert s.account("gcore").number("LOCK_WAIT") == 2.5
    with pytest.raises(ConfigError, match="INGEST_INGESTIO_PUBLISH='maybe' is not a boolean; set it to true or false"):
        Settings.from_env({"INGEST_INGESTIO_API_KEY": "t", "INGEST_INGESTIO_PROFILE": "p",
                           "INGEST_INGESTIO_PUBLISH": "maybe"})


def test_every_environment_the_project_ships_is_made_of_declared_settings(tmp_path) -> None:
    """The sandbox's printed settings, the demo's and the tests' environment: each is read
    by the same declarations (an undeclared or malformed setting fails here), and each
    configures an account at every registered provider."""
    from sandbox.server import Sandbox
    from tasks.providers import REGISTRY
    from tests.conftest import ENV, shipped_budgets
    from workers.demo import DEMO_PROVIDER_SETTINGS, _fleet_settings

    sandbox = Sandbox(data_dir=tmp_path / "data")
    try:
        printed = sandbox.env()
    finally:
        sandbox.stop()
    demo = {**_fleet_settings(tmp_path, "redis://127.0.0.1:1/0", 1), **printed, **DEMO_PROVIDER_SETTINGS}
    for name, env in (("sandbox", printed), ("demo", demo), ("tests", {**ENV, **shipped_budgets(0.1)})):
        settings = Settings.from_env(env)
        assert {p for p, _ in settings.accounts} == set(REGISTRY), f"{name}: not every provider has an account"
