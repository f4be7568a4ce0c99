"""`[outbox]` in the TOML, checked as the rest of the settings are; `aigne-hub outbox` and
the dashboard's line on what waits."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from hub.cli import main
from hub.outbox.config import STRIPE_URL, OutboxSettings, SinkSettings
from hub.settings import ConfigError, load_settings
from hub.store import SqlStore
from hub.store.outbox import Due, OutboxStore
from tests.conftest import USER, make_settings, start_hub

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
HOOK = (
    '[[outbox.sinks]]\nkind = "webhook"\nurl = "https://billing.example/hook"\n'
    f'secret = "{SECRET}"\n'
)


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> object:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return load_settings(path, env or {}).outbox


def test_sinks_are_read_with_their_defaults_and_secrets_from_the_environment(
    tmp_path: Path,
) -> None:
    outbox = load(
        tmp_path,
        "[outbox]\nlease_seconds = 60\n" + HOOK + '[[outbox.sinks]]\nkind = "stripe"\n'
        'event_name = "aigne_credits"\nsecret_env = "STRIPE_KEY"\nmode = "summed"\n'
        "period_seconds = 600\n",
        {"STRIPE_KEY": "sk_live_abc"},
    )
    webhook, stripe = outbox.sinks  # type: ignore[attr-defined]
    assert (webhook.name, webhook.mode, webhook.events) == (
        "webhook",
        "per_call",
        ("meter_event", "grant"),
    )
    assert (stripe.name, stripe.url, stripe.mode, stripe.period_seconds) == (
        "stripe",
        STRIPE_URL,
        "summed",
        600,
    )
    assert stripe.events == ("meter_event",) and stripe.secret == "sk_live_abc"
    assert "sk_live_abc" not in repr(outbox) and SECRET not in repr(outbox)
    assert outbox.lease_seconds == 60.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[[outbox.sinks]]\nkind = "email"\n', "outbox.sinks[0].kind", '"webhook" or "stripe"'),
        (
            '[[outbox.sinks]]\nkind = "webhook"\nurl = "https://x.example"\nsecret = "plain"\n',
            "outbox.sinks[0].secret",
            "whsec_",
        ),
        (
            '[[outbox.sinks]]\nkind = "stripe"\nsecret = "sk_x"\n',
            "outbox.sinks[0].event_name",
            "required",
        ),
        (
            '[[outbox.sinks]]\nkind = "stripe"\nevent_name = "e"\nsecret_env = "NOPE"\n',
            "outbox.sinks[0].secret_env",
            "NOPE is not set",
        ),
        ("[outbox]\nbatch = 0\n", "outbox.batch", "from 1"),
        ("[outbox]\nspeed = 1\n", "outbox.speed", "unknown setting"),
        ("[outbox]\nlease_seconds = 5\ntimeout = 10\n", "outbox.lease_seconds", "twice"),
        (HOOK + 'mode = "hourly"\n', "outbox.sinks[0].mode", '"summed"'),
        (HOOK + HOOK, "outbox.sinks", "name of its own"),
    ],
)
def test_a_bad_outbox_setting_is_refused_naming_its_key(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.key == key and words in str(caught.value)


async def _fail_first_delivery(url: str) -> None:
    store = SqlStore(url)
    await store.open()
    outbox = OutboxStore(store)
    await outbox.enroll({"webhook": ("grant",)}, 10)
    await outbox.record(
        "webhook", summed=False, delivered=[], failed=[("1", 9e9, "HTTP 502")], now=1
    )
    await store.close()


async def _due(url: str) -> list[Due]:
    store = SqlStore(url)
    await store.open()
    try:
        return await OutboxStore(store).due("webhook", 2.0, 10)
    finally:
        await store.close()


def test_outbox_list_shows_what_waits_and_retry_makes_it_due(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = tmp_path / "hub.toml"
    config.write_text(f'[database]\nurl = "{url}"\n' + HOOK)
    grant = ["credits", "grant", "did:abt:carol", "2", "--create", "--config", str(config)]
    assert main(grant) == 0
    asyncio.run(_fail_first_delivery(url))
    capsys.readouterr()

    assert main(["outbox", "list", "--json", "--config", str(config)]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["account"], row["amount"], row["state"], row["attempts"]) == (
        "did:abt:carol",
        "2",
        "failing",
        1,
    )
    assert row["last_error"] == "HTTP 502" and row["next_at"] is not None
    assert asyncio.run(_due(url)) == []  # its next try is far off
    assert main(["outbox", "retry", "1", "--config", str(config)]) == 0
    [due] = asyncio.run(_due(url))  # due at once
    assert due.attempts == 1 and due.kind == "grant"
    assert main(["outbox", "retry", "99", "--config", str(config)]) == 1
    assert "no undelivered outbox row 99" in capsys.readouterr().err


@pytest.mark.anyio
async def test_an_admin_sees_on_the_dashboard_what_waits_for_each_sink(db_url: str) -> None:
    down = SinkSettings(
        name="billing", kind="webhook", url="http://127.0.0.1:9/hook", secret=SECRET
    )
    outbox = OutboxSettings(sinks=(down,), poll_seconds=60.0, timeout=1.0, lease_seconds=5.0)
    hub = await start_hub(make_settings(db_url, outbox=outbox), None)  # grants 10 credits
    try:
        await hub.admin.ensure_account(USER, is_admin=True)
        await asyncio.sleep(0.3)  # key lookups are cached for 0.2 s in these tests
        page = (await hub.client.get("/dashboard")).text
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()
    assert 'id="outbox-status">Meter events out: billing: 1 waiting, the oldest' in page
