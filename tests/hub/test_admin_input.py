"""The CLI and the admin API check what an operator gives them by one rule (hub.admin_input):
the same value is refused through either door, in the same words."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.conftest import Hub
from tests.hub.test_bounds import admin_hub, send  # noqa: F401 (a fixture)
from tests.hub.test_cli import Cli, write_config

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("fields", "flags"),
    [
        ({"provider": "nowhere", "key": "sk-1"}, ["nowhere", "--key", "sk-1"]),
        ({"provider": "mock", "key": "sk 1"}, ["mock", "--key", "sk 1"]),
        (
            {"provider": "mock", "key": "sk-1", "weight": 0},
            ["mock", "--key", "sk-1", "--weight", "0"],
        ),
    ],
)
async def test_a_provider_key_is_refused_alike_by_the_cli_and_the_admin_api(
    admin_hub: Hub,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fields: dict[str, object],
    flags: list[str],
) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}")
    with open(config, "a") as file:  # the hub's one provider, as the hub's settings have it
        file.write('[providers.mock]\nkind = "openai"\nbase_url = "http://127.0.0.1:9"\n')
        file.write('api_key = "sk-config"\n')
    # The CLI runs its own event loop: in a thread, beside the test's.
    cli = await anyio.to_thread.run_sync(Cli, config, capsys)

    answer = await send(admin_hub.client, "POST", "/api/admin/credentials", fields)
    code, _, err = await anyio.to_thread.run_sync(cli.run, "credentials", "add", *flags)

    message = answer.json()["error"]["message"]
    assert answer.status_code in (400, 404) and code == 1
    # The door's own field names (`key` / `--key`) aside, the words are the same.
    assert err.strip() == "aigne-hub: " + message.replace("'key'", "'--key'").replace(
        "'weight'", "'--weight'"
    )
    assert await admin_hub.admin.list_credentials() == []
    assert await anyio.to_thread.run_sync(cli.json, "credentials", "list") == []
