"""The `aigne-hub` command: keys, credits, rates, calls and db, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hub.cli import main

ENV_SETTINGS = (
    "AIGNE_HUB_CONFIG",
    "AIGNE_HUB_DATABASE_URL",
    "AIGNE_HUB_MODE",
    "AIGNE_HUB_PORT",
    "AIGNE_HUB_HOST",
    "AIGNE_HUB_SESSION_SECRET",
    "AIGNE_HUB_WORKERS",
    "AIGNE_HUB_REDIS_URL",
)
ALICE = "did:abt:alice"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real environment must not pick the database; a stray default db lands in tmp."""
    for name in ENV_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def write_config(tmp_path: Path, url: str) -> str:
    path = tmp_path / "hub.toml"
    path.write_text(f'[database]\nurl = "{url}"\n')
    return str(path)


@pytest.fixture
def config(tmp_path: Path) -> str:
    return write_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}")


class Cli:
    """Runs `aigne-hub ... --config <file>` and captures what it prints, on a database
    made first (as `serve` would)."""

    def __init__(self, config: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys
        assert main(["db", "upgrade", "--create", "--config", config]) == 0
        capsys.readouterr()

    def run(self, *argv: str) -> tuple[int, str, str]:
        code = main([*argv, "--config", self.config])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self.run(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(config: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(config, capsys)


def test_create_a_key_prints_its_id_and_secret_once(cli: Cli) -> None:
    created = cli.json("keys", "create", "--user", ALICE, "--name", "laptop")

    assert created["id"].startswith("key_")
    assert created["key"].startswith("ahk_")
    assert len(created["key"]) > 20
    assert created["user_did"] == ALICE


def test_list_keys_never_shows_the_secret(cli: Cli) -> None:
    created = cli.json("keys", "create", "--user", ALICE, "--name", "laptop")

    code, out, _ = cli.run("keys", "list", "--json")

    assert code == 0
    assert created["key"] not in out
    [key] = json.loads(out)
    assert key["id"] == created["id"]
    assert key["user_did"] == ALICE
    assert key["name"] == "laptop"
    assert key["prefix"] == created["key"][:8]
    assert key["revoked_at"] is None
    assert key["created_at"]


def test_list_keys_of_one_user(cli: Cli) -> None:
    cli.json("keys", "create", "--user", ALICE)
    bob = cli.json("keys", "create", "--user", "did:abt:bob")

    keys = cli.json("keys", "list", "--user", "did:abt:bob")

    assert [k["id"] for k in keys] == [bob["id"]]


def test_a_revoked_key_shows_when_it_was_revoked(cli: Cli) -> None:
    created = cli.json("keys", "create", "--user", ALICE, "--name", "laptop")

    revoked = cli.json("keys", "revoke", created["id"])
    [key] = cli.json("keys", "list")

    assert revoked == {"id": created["id"], "revoked": True}
    assert key["id"] == created["id"]
    assert key["revoked_at"] is not None


def test_revoking_an_unknown_key_fails_on_stderr(cli: Cli) -> None:
    code, out, err = cli.run("keys", "revoke", "key_doesnotexist")

    assert code == 1
    assert out == ""
    assert "no live key with id key_doesnotexist" in err


def test_revoking_a_key_twice_fails_the_second_time(cli: Cli) -> None:
    created = cli.json("keys", "create", "--user", ALICE)
    cli.json("keys", "revoke", created["id"])

    code, _, err = cli.run("keys", "revoke", created["id"])

    assert code == 1
    assert created["id"] in err


def test_human_key_listing_is_a_table_with_a_header(cli: Cli) -> None:
    created = cli.json("keys", "create", "--user", ALICE, "--name", "laptop")

    code, out, _ = cli.run("keys", "list")

    assert code == 0
    header, row, *rest = out.splitlines()
    assert rest == []
    assert header.split() == [
        "ID",
        "USER_DID",
        "PREFIX",
        "NAME",
        "APP_DID",
        "CREATED_AT",
        "LAST_USED_AT",
        "REVOKED_AT",
        "EXPIRES_AT",
        "RPM",
        "TPM",
        "CONCURRENT",
        "MODELS",
        "BUDGET",
        "PERIOD",
        "SPENT",
        "RESETS_AT",
    ]
    assert row.startswith(created["id"])
    assert row.index(ALICE) == header.index("USER_DID")
    assert row.index("laptop") == header.index("NAME")
    assert row.index(" - ") + 1 == header.index("APP_DID")  # unset values show as "-"
    assert created["key"] not in out


def test_human_listing_of_nothing_says_none(cli: Cli) -> None:
    code, out, _ = cli.run("keys", "list")

    assert code == 0
    assert out.strip() == "(none)"


def test_human_key_creation_warns_it_is_shown_once(cli: Cli) -> None:
    code, out, err = cli.run("keys", "create", "--user", ALICE)

    assert code == 0
    assert "shown only once" in err
    assert "ahk_" in out


def test_grant_credits_then_read_the_balance(cli: Cli) -> None:
    granted = cli.json("credits", "grant", ALICE, "12.5")
    balance = cli.json("credits", "balance", ALICE)

    assert granted == {"user_did": ALICE, "granted": "12.5", "balance": "12.5"}
    assert balance == {"user_did": ALICE, "balance": "12.5", "granted": "12.5", "metered": "0"}


def test_grants_add_up_and_a_negative_grant_takes_credits_back(cli: Cli) -> None:
    cli.json("credits", "grant", ALICE, "10")
    cli.json("credits", "grant", ALICE, "0.25", "--note", "bonus")
    taken = cli.json("credits", "grant", ALICE, "-3")

    assert taken["balance"] == "7.25"
    assert cli.json("credits", "balance", ALICE)["granted"] == "7.25"


def test_a_grant_finer_than_ten_decimals_is_refused_and_writes_nothing(cli: Cli) -> None:
    cli.json("credits", "grant", ALICE, "1")

    code, out, err = cli.run("credits", "grant", ALICE, "0.00000000001")

    assert code != 0
    assert out == ""
    assert "at most 10 decimals" in err
    assert cli.json("credits", "balance", ALICE)["balance"] == "1"


def test_a_grant_that_is_not_a_number_is_refused(cli: Cli) -> None:
    code, _, err = cli.run("credits", "grant", ALICE, "lots")

    assert code == 1
    assert "must be a number of credits" in err


def test_the_balance_of_an_unknown_user_is_zero(cli: Cli) -> None:
    ledger = cli.json("credits", "balance", "did:abt:nobody")

    assert (ledger["balance"], ledger["granted"], ledger["metered"]) == ("0", "0", "0")


def test_a_chat_rate_must_say_what_output_costs(cli: Cli) -> None:
    code, _, err = cli.run("rates", "set", "openai/gpt-4o", "--input", "0.000002")

    assert code == 1
    assert "'output' is required" in err
    assert cli.json("rates", "list") == []


def test_rates_per_million_tokens_are_stored_per_token(cli: Cli) -> None:
    model = "openai/gpt-4o-mini"
    set_rate = cli.json(
        "rates", "set", model, "--input", "0.15", "--output", "0.6", "--per-million"
    )
    [rate] = cli.json("rates", "list")

    assert set_rate["input_rate"] == "0.00000015"
    assert set_rate["output_rate"] == "0.0000006"
    assert rate["model"] == model
    assert rate["type"] == "chatCompletion"
    assert rate["input_rate"] == "0.00000015"
    assert rate["output_rate"] == "0.0000006"
    assert rate["cached_rate"] is None
    assert rate["image_rate"] is None
    assert "id" not in rate


def test_setting_a_rate_again_replaces_it(cli: Cli) -> None:
    cli.json("rates", "set", "openai/gpt-4o", "--input", "0.000002", "--output", "0")
    cli.json("rates", "set", "openai/gpt-4o", "--input", "0.000005", "--output", "0.00001")
    cli.json("rates", "set", "openai/gpt-4o", "--type", "embedding", "--input", "0.0000001")

    rates = cli.json("rates", "list")

    assert [(r["type"], r["input_rate"], r["output_rate"]) for r in rates] == [
        ("chatCompletion", "0.000005", "0.00001"),
        ("embedding", "0.0000001", "0"),
    ]


def test_a_rate_may_price_cache_writes(cli: Cli) -> None:
    cli.json(
        "rates",
        "set",
        "anthropic/claude-sonnet-4-5",
        "--input",
        "3",
        "--output",
        "15",
        "--cache-write",
        "3.75",
        "--cached",
        "0.3",
        "--per-million",
    )
    [rate] = cli.json("rates", "list")

    assert (rate["cache_write_rate"], rate["cached_rate"]) == ("0.00000375", "0.0000003")


def test_a_rate_can_be_removed_once(cli: Cli) -> None:
    cli.json("rates", "set", "openai/gpt-4o", "--input", "0.000002", "--output", "0")
    removed = cli.json("rates", "remove", "openai/gpt-4o")
    code, _, err = cli.run("rates", "remove", "openai/gpt-4o")

    assert removed["removed"] is True and cli.json("rates", "list") == []
    assert code == 1 and "no chatCompletion rate for openai/gpt-4o" in err


def test_calls_list_on_an_empty_database_is_empty(cli: Cli) -> None:
    code, out, _ = cli.run("calls", "list", "--json")

    assert code == 0
    assert out.strip() == "[]"


def test_db_upgrade_reports_the_schema_version(cli: Cli, tmp_path: Path) -> None:
    from hub.store.migrate import LATEST

    upgraded = cli.json("db", "upgrade")

    assert upgraded["schema_version"] == LATEST >= 1
    assert upgraded["database"] == f"sqlite:///{tmp_path / 'cli.db'}"
    assert (tmp_path / "cli.db").exists()


def test_a_bad_config_file_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[database]\nurl = "mysql://hub@db/hub"\n')

    code = main(["keys", "list", "--config", str(path)])

    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert "database.url" in err
    assert not (tmp_path / "aigne-hub.db").exists()


def test_a_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["calls", "list", "--config", str(tmp_path / "nowhere.toml")])

    assert code == 2
    assert "no such file" in capsys.readouterr().err


def test_the_config_file_can_come_from_aigne_hub_config(
    config: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIGNE_HUB_CONFIG", config)

    code = main(["credits", "grant", ALICE, "2", "--json", "--create"])

    assert code == 0
    assert json.loads(capsys.readouterr().out)["balance"] == "2"
    assert (tmp_path / "cli.db").exists()


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: aigne-hub" in capsys.readouterr().out


def test_options_before_the_command_are_honoured(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--config", config, "--json", "--create", "db", "upgrade"])

    out = capsys.readouterr().out
    assert code == 0
    assert json.loads(out)["database"] == f"sqlite:///{tmp_path / 'cli.db'}"


def test_a_rate_that_is_not_a_number_is_refused(cli: Cli) -> None:
    code, _, err = cli.run("rates", "set", "openai/gpt-4o", "--input", "cheap", "--output", "0")

    assert code == 1
    assert "cheap" in err


def test_the_cli_works_on_each_database(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(write_config(tmp_path, db_url), capsys)

    created = cli.json("keys", "create", "--user", ALICE, "--name", "laptop")
    cli.json("credits", "grant", ALICE, "12.5")
    cli.json(
        "rates", "set", "openai/gpt-4o-mini", "--input", "0.15", "--output", "0", "--per-million"
    )
    cli.json("keys", "revoke", created["id"])

    [key] = cli.json("keys", "list")
    assert key["revoked_at"] is not None
    assert cli.json("credits", "balance", ALICE)["balance"] == "12.5"
    assert cli.json("rates", "list")[0]["input_rate"] == "0.00000015"
    assert cli.json("calls", "list") == []
    assert cli.json("db", "upgrade")["schema_version"] >= 1


def test_db_upgrade_hides_the_database_password(
    pg_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The test server trusts local connections, so any password is accepted and ignored.
    scheme, rest = pg_database.split("://", 1)
    user, host = rest.split("@", 1)
    url = f"{scheme}://{user}:hunter2@{host}"
    cli = Cli(write_config(tmp_path, url), capsys)

    code, out, err = cli.run("db", "upgrade", "--json")

    assert code == 0, err
    assert "hunter2" not in out
    assert json.loads(out)["database"] == f"{scheme}://{user}:***@{host}"


@pytest.mark.parametrize(
    "extra",
    [
        ("--input", "-0.15", "--output", "0.6"),
        ("--input", "0.15", "--output", "-0.6"),
        ("--type", "imageGeneration", "--input", "0", "--image", "-1"),
        ("--type", "imageGeneration", "--input", "0"),
    ],
)
def test_rates_that_would_give_calls_away_are_refused(cli: Cli, extra: tuple[str, ...]) -> None:
    code, _, err = cli.run("rates", "set", "openai/gpt-4o", *extra)

    assert code == 1 and err
    assert cli.json("rates", "list") == []


def test_serve_refuses_a_number_of_workers_that_is_not_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "hub.db"}"\n')
    for bad in ("0", "two", "-1"):
        assert main(["serve", "--config", str(config), "--workers", bad]) == 1
        assert "'--workers': must be a whole number from 1" in capsys.readouterr().err
