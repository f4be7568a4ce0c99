"""Settings: defaults, the TOML file, environment overrides, and errors that name their key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hub.settings import ConfigError, Limits, load_settings

FULL = """
mode = "self-hosted"

[server]
host = "0.0.0.0"
port = 9000

[database]
url = "postgresql://hub@db.internal/hub"
sqlite_synchronous = "normal"

[session]
secret = "from-the-file"

[limits]
max_body_bytes = 1024
upstream_read_timeout = 30.5
key_cache_seconds = 2

[providers.openai]
api_keys = ["sk-file-1", "sk-file-2"]
models = ["gpt-4o-mini", "gpt-4o"]

[providers.local]
base_url = "http://127.0.0.1:8000/v1/"
api_key = "sk-local"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file_or_environment() -> None:
    settings = load_settings(None, env={})

    assert settings.mode == "service-provider"
    assert settings.billing is True
    assert settings.database_url == "sqlite:///aigne-hub.db"
    assert settings.host == "127.0.0.1"
    assert settings.port == 8090
    assert settings.sqlite_synchronous == "FULL"
    assert settings.providers == {}
    assert settings.limits == Limits()
    assert settings.session_secret


def test_self_hosted_mode_turns_billing_off() -> None:
    assert load_settings(None, env={"AIGNE_HUB_MODE": "self-hosted"}).billing is False


def test_a_file_sets_server_database_limits_and_providers(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, FULL), env={})

    assert settings.mode == "self-hosted"
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)
    assert settings.database_url == "postgresql://hub@db.internal/hub"
    assert settings.sqlite_synchronous == "NORMAL"
    assert settings.session_secret == "from-the-file"
    assert settings.limits.max_body_bytes == 1024
    assert settings.limits.upstream_read_timeout == 30.5
    assert settings.limits.key_cache_seconds == 2.0
    assert settings.limits.balance_cache_seconds == Limits().balance_cache_seconds

    openai = settings.providers["openai"]
    assert openai.kind == "openai"
    assert openai.base_url == "https://api.openai.com/v1"
    assert openai.api_keys == ("sk-file-1", "sk-file-2")
    assert openai.models == ("gpt-4o-mini", "gpt-4o")
    local = settings.providers["local"]
    assert local.base_url == "http://127.0.0.1:8000/v1"  # the trailing slash is dropped
    assert local.api_keys == ("sk-local",)
    assert set(settings.providers) == {"openai", "local"}


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    env = {
        "AIGNE_HUB_DATABASE_URL": "sqlite:///from-env.db",
        "AIGNE_HUB_MODE": "service-provider",
        "AIGNE_HUB_PORT": "9100",
        "AIGNE_HUB_HOST": "10.0.0.1",
        "AIGNE_HUB_SESSION_SECRET": "from-the-env",
    }
    settings = load_settings(write(tmp_path, FULL), env=env)

    assert settings.database_url == "sqlite:///from-env.db"
    assert settings.mode == "service-provider"
    assert settings.billing is True
    assert settings.port == 9100
    assert settings.host == "10.0.0.1"
    assert settings.session_secret == "from-the-env"


def test_an_empty_environment_variable_does_not_override_the_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, FULL), env={"AIGNE_HUB_PORT": ""})

    assert settings.port == 9000


def test_aigne_hub_config_names_the_file_when_no_path_is_given(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9200\n")

    assert load_settings(None, env={"AIGNE_HUB_CONFIG": str(path)}).port == 9200


def test_an_explicit_path_wins_over_aigne_hub_config(tmp_path: Path) -> None:
    named = write(tmp_path, "[server]\nport = 9200\n")
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 9300\n")

    settings = load_settings(other, env={"AIGNE_HUB_CONFIG": str(named)})

    assert settings.port == 9300


def test_a_random_session_secret_when_none_is_set() -> None:
    first = load_settings(None, env={}).session_secret
    second = load_settings(None, env={}).session_secret

    assert len(first) >= 32
    assert first != second


def test_provider_keys_in_the_environment_switch_on_presets() -> None:
    env = {"OPENAI_API_KEY": "sk-openai-env", "DEEPSEEK_API_KEY": "sk-deepseek-env"}

    providers = load_settings(None, env=env).providers

    assert set(providers) == {"openai", "deepseek"}
    assert providers["openai"].base_url == "https://api.openai.com/v1"
    assert providers["openai"].api_keys == ("sk-openai-env",)
    assert providers["openai"].kind == "openai"
    assert providers["deepseek"].base_url == "https://api.deepseek.com/v1"
    assert providers["deepseek"].api_keys == ("sk-deepseek-env",)


def test_an_empty_provider_key_in_the_environment_switches_nothing_on() -> None:
    assert load_settings(None, env={"OPENAI_API_KEY": ""}).providers == {}


def test_a_file_provider_without_keys_takes_its_key_from_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[providers.my-corp]\nbase_url = "https://llm.corp.example/v1"\n'
        '[providers.openai]\nmodels = ["gpt-4o-mini"]\n',
    )
    env = {"MY_CORP_API_KEY": "sk-corp-env", "OPENAI_API_KEY": "sk-openai-env"}

    providers = load_settings(path, env=env).providers

    assert providers["my-corp"].api_keys == ("sk-corp-env",)
    assert providers["my-corp"].base_url == "https://llm.corp.example/v1"
    assert providers["openai"].api_keys == ("sk-openai-env",)
    assert providers["openai"].models == ("gpt-4o-mini",)


def test_keys_in_the_file_win_over_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[providers.openai]\napi_keys = ["sk-file"]\n')

    providers = load_settings(path, env={"OPENAI_API_KEY": "sk-env"}).providers

    assert providers["openai"].api_keys == ("sk-file",)


BAD = [
    pytest.param('colour = "blue"\n', {}, "colour", "unknown setting", id="unknown-top-level"),
    pytest.param(
        "[limits]\nmax_body_kb = 4\n", {}, "limits.max_body_kb", "unknown setting", id="limits-key"
    ),
    pytest.param(
        '[server]\nhostname = "x"\n', {}, "server.hostname", "unknown setting", id="server-key"
    ),
    pytest.param(
        "[limits]\nclient_send_timeout = nan\n",
        {},
        "limits.client_send_timeout",
        "positive number",
        id="limits-nan",
    ),
    pytest.param(
        "[limits]\nupstream_read_timeout = inf\n",
        {},
        "limits.upstream_read_timeout",
        "positive number",
        id="limits-inf",
    ),
    pytest.param(
        '[providers.openai]\napikeys = ["sk"]\n',
        {},
        "providers.openai.apikeys",
        "unknown setting",
        id="provider-key",
    ),
    pytest.param('mode = "free-for-all"\n', {}, "mode", "free-for-all", id="mode-file"),
    pytest.param("", {"AIGNE_HUB_MODE": "hosted"}, "mode", "hosted", id="mode-env"),
    pytest.param(
        '[server]\nport = "abc"\n', {}, "server.port", "must be a whole number", id="port-abc"
    ),
    pytest.param(
        "", {"AIGNE_HUB_PORT": "abc"}, "server.port", "must be a whole number", id="port-env"
    ),
    pytest.param("[server]\nport = 70000\n", {}, "server.port", "65535", id="port-70000"),
    pytest.param("[server]\nport = 0\n", {}, "server.port", "65535", id="port-0"),
    pytest.param(
        '[database]\nurl = "mysql://hub@db/hub"\n',
        {},
        "database.url",
        "must start with sqlite:// or postgresql://",
        id="database-scheme",
    ),
    pytest.param(
        "",
        {"AIGNE_HUB_DATABASE_URL": "hub.db"},
        "database.url",
        "must start with sqlite:// or postgresql://",
        id="database-env",
    ),
    pytest.param(
        '[database]\nsqlite_synchronous = "OFF"\n',
        {},
        "database.sqlite_synchronous",
        "FULL, NORMAL or EXTRA",
        id="sqlite-synchronous",
    ),
    pytest.param(
        '[providers.claude]\nkind = "bedrock"\nbase_url = "https://bedrock.example/v1"\n',
        {},
        "providers.claude.kind",
        "'bedrock' is not supported yet",
        id="kind-unsupported",
    ),
    pytest.param(
        '[providers.local]\napi_keys = ["sk"]\n',
        {},
        "providers.local.base_url",
        "required for a provider that is not a preset",
        id="no-base-url",
    ),
    pytest.param(
        '[providers.local]\nbase_url = "ftp://files.example/v1"\n',
        {},
        "providers.local.base_url",
        "must be an http(s) URL",
        id="base-url-scheme",
    ),
    pytest.param(
        "[limits]\nmax_body_bytes = -1\n",
        {},
        "limits.max_body_bytes",
        "must be a positive whole number",
        id="negative-limit",
    ),
    pytest.param(
        "[limits]\nkey_cache_seconds = 0\n",
        {},
        "limits.key_cache_seconds",
        "must be a positive number",
        id="zero-limit",
    ),
    pytest.param(
        '[limits]\nupstream_read_timeout = "30"\n',
        {},
        "limits.upstream_read_timeout",
        "must be a positive number",
        id="text-limit",
    ),
    pytest.param(
        '[providers.openai]\napi_keys = "sk-one"\n',
        {},
        "providers.openai.api_keys",
        "must be a list of keys",
        id="api-keys-string",
    ),
    pytest.param(
        '[providers.openai]\napi_keys = ["sk-one", 2]\n',
        {},
        "providers.openai.api_keys",
        "must be a list of keys",
        id="api-keys-number",
    ),
    pytest.param(
        '[providers.openai]\napi_keys = ["sk-one", ""]\n',
        {},
        "providers.openai.api_keys",
        "must be a list of keys",
        id="api-keys-empty-string",
    ),
    pytest.param(
        '[providers.openai]\napi_keys = [{key = "sk-one", weight = 0}]\n',
        {},
        "providers.openai.api_keys",
        "a weight must be a positive whole number",
        id="api-keys-zero-weight",
    ),
    pytest.param(
        '[providers.openai]\nmodels = "gpt-4o"\n',
        {},
        "providers.openai.models",
        "must be a list of model names",
        id="models-string",
    ),
    pytest.param('server = "localhost"\n', {}, "server", "must be a table", id="server-not-table"),
]


@pytest.mark.parametrize(("text", "env", "key", "problem"), BAD)
def test_bad_settings_name_the_key_at_fault(
    tmp_path: Path, text: str, env: dict[str, str], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env=env)

    assert caught.value.key == key
    assert f"'{key}'" in str(caught.value)
    assert problem in str(caught.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"

    with pytest.raises(ConfigError) as caught:
        load_settings(missing, env={})

    assert caught.value.key == "--config/AIGNE_HUB_CONFIG"
    assert "no such file" in str(caught.value)
    assert str(missing) in str(caught.value)


def test_a_missing_file_named_by_aigne_hub_config_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"

    with pytest.raises(ConfigError) as caught:
        load_settings(None, env={"AIGNE_HUB_CONFIG": str(missing)})

    assert caught.value.key == "--config/AIGNE_HUB_CONFIG"
    assert str(missing) in str(caught.value)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nport = 1\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})

    assert caught.value.key == "--config/AIGNE_HUB_CONFIG"
    assert "is not valid TOML" in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_config_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="configuration error at 'mode'"):
        load_settings(None, env={"AIGNE_HUB_MODE": "nope"})


def test_a_fractional_integer_limit_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nupstream_max_connections = 0.5\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})

    assert caught.value.key == "limits.upstream_max_connections"


def test_anthropic_and_google_presets_come_from_the_environment() -> None:
    settings = load_settings(env={"ANTHROPIC_API_KEY": "sk-ant", "GEMINI_API_KEY": "g-key"})

    anthropic, google = settings.providers["anthropic"], settings.providers["google"]
    assert (anthropic.kind, anthropic.base_url, anthropic.api_keys) == (
        "anthropic",
        "https://api.anthropic.com",
        ("sk-ant",),
    )
    assert (google.kind, google.api_keys) == ("gemini", ("g-key",))


def test_keys_can_carry_weights(tmp_path: Path) -> None:
    text = '[providers.openai]\napi_keys = ["sk-a", {key = "sk-b", weight = 30}]\n'
    provider = load_settings(write(tmp_path, text), env={}).providers["openai"]

    assert provider.api_keys == ("sk-a", "sk-b")
    assert provider.key_weights() == (100, 30)


def test_server_workers_is_a_number_from_one_or_auto(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text("[server]\nworkers = 3\n")
    assert load_settings(config, env={}).workers == 3
    config.write_text('[server]\nworkers = "auto"\n')
    assert load_settings(config, env={}).workers == len(os.sched_getaffinity(0))
    for bad in ("0", '"many"', "2.5", "true"):
        config.write_text(f"[server]\nworkers = {bad}\n")
        with pytest.raises(ConfigError, match="server.workers"):
            load_settings(config, env={})
    assert load_settings(None, env={}).workers == 1


def test_relative_paths_in_the_file_are_taken_from_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = write(folder, '[database]\nurl = "sqlite:///data/hub.db?mode=rwc"\n')
    defaults = write(tmp_path, "")

    settings = load_settings(path, env={})
    default = load_settings(defaults, env={})

    assert settings.database_url == f"sqlite:///{folder / 'data' / 'hub.db'}?mode=rwc"
    assert settings.encryption_key_file == str(folder / "aigne-hub.key")
    assert settings.config_file == str(path)
    assert default.database_url == f"sqlite:///{tmp_path / 'aigne-hub.db'}"


@pytest.mark.parametrize(
    "url",
    ["sqlite:////srv/hub.db", "sqlite:///:memory:", "postgresql://hub@db:5432/hub"],
)
def test_absolute_and_other_database_urls_are_kept_as_given(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, f'[database]\nurl = "{url}"\n')

    assert load_settings(path, env={}).database_url == url


def test_a_database_url_from_the_environment_is_the_current_folders(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\nurl = "sqlite:///ignored.db"\n')

    env = {"AIGNE_HUB_DATABASE_URL": "sqlite:///here.db"}
    assert load_settings(path, env=env).database_url == "sqlite:///here.db"
