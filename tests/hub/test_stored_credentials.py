"""Provider keys kept in the database: sealed at rest, shown masked, used by the hub."""

from __future__ import annotations

import io
import json
import sqlite3
import time
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import respx
from cryptography.fernet import Fernet

from hub.app import create_app
from hub.cli import main
from hub.secrets import SecretBox
from hub.settings import ProviderSettings
from hub.store import SqlStore
from hub.store.admin import Admin
from hub.store.credentials import ProviderKey
from tests.conftest import UPSTREAM, make_settings, start_hub

pytestmark = pytest.mark.anyio

STORED_KEY = "sk-stored-in-the-database-123456"


async def test_a_stored_key_is_sealed_listed_masked_and_used(db_url: str, tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    keyless = ProviderSettings("mock", "openai", UPSTREAM, (), ("gpt-4o-mini",))
    settings = replace(make_settings(db_url), providers={"mock": keyless}, encryption_key=key)
    store = SqlStore(db_url)
    await store.open()
    admin = Admin(store)
    added = await admin.add_credential(ProviderKey("mock", STORED_KEY), SecretBox(key.encode()))
    [raw] = await store.database.fetch_all("SELECT sealed, masked FROM ai_credentials")
    listed = await admin.list_credentials()
    await store.close()

    assert STORED_KEY not in raw["sealed"] and raw["masked"] == "sk-s...3456"
    assert listed == [
        {
            **{k: added[k] for k in ("id", "provider", "masked", "weight")},
            "created_at": listed[0]["created_at"],
        }
    ]
    assert STORED_KEY not in json.dumps(listed)

    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        route = upstream.post("/chat/completions").respond(
            401, json={"error": {"message": f"bad key {STORED_KEY}"}}
        )
        hub = await start_hub(settings, httpx.MockTransport(upstream.async_handler))
        try:
            response = await hub.chat()
        finally:
            await hub.client.aclose()
            await hub.app.shutdown()

    assert route.calls.last.request.headers["authorization"] == f"Bearer {STORED_KEY}"
    assert STORED_KEY not in response.text


async def test_a_hub_without_the_right_encryption_key_refuses_to_start(db_url: str) -> None:
    store = SqlStore(db_url)
    await store.open()
    await Admin(store).add_credential(
        ProviderKey("mock", STORED_KEY), SecretBox(Fernet.generate_key())
    )
    await store.close()
    wrong = replace(make_settings(db_url), encryption_key=Fernet.generate_key().decode())

    app = create_app(wrong)
    with pytest.raises(ValueError, match="AIGNE_HUB_ENCRYPTION_KEY"):
        await app.startup()
    await app.store.close()


def test_the_cli_stores_a_key_from_stdin_and_never_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIGNE_HUB_ENCRYPTION_KEY", raising=False)
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/cli.db"\n'
        f'[security]\nencryption_key_file = "{tmp_path}/hub.key"\n'
        '[providers.openai]\napi_keys = ["sk-from-config-0000"]\n'
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(STORED_KEY + "\n"))

    assert main(["db", "upgrade", "--create", "--config", str(config)]) == 0  # as serve would
    capsys.readouterr()
    assert (
        main(["credentials", "add", "openai", "--weight", "40", "--config", str(config), "--json"])
        == 0
    )
    added = json.loads(capsys.readouterr().out)
    assert main(["credentials", "list", "--config", str(config), "--json"]) == 0
    listed = capsys.readouterr().out
    assert main(["credentials", "remove", added["id"], "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["credentials", "list", "--config", str(config), "--json"]) == 0

    assert added["masked"] == "sk-s...3456" and added["weight"] == 40
    assert STORED_KEY not in listed and json.loads(listed)[0]["id"] == added["id"]
    assert json.loads(capsys.readouterr().out) == []
    assert oct((tmp_path / "hub.key").stat().st_mode)[-3:] == "600"
    assert main(["credentials", "add", "nobody", "--key", "x", "--config", str(config)]) == 1


async def test_keys_added_or_removed_while_the_hub_runs_take_effect_on_reload(
    db_url: str,
) -> None:
    key = Fernet.generate_key().decode()
    keyless = ProviderSettings("mock", "openai", UPSTREAM, (), ("gpt-4o-mini",))
    settings = replace(make_settings(db_url), providers={"mock": keyless}, encryption_key=key)
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        route = upstream.post("/chat/completions").respond(
            json={"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
        )
        hub = await start_hub(settings, httpx.MockTransport(upstream.async_handler))
        try:
            await hub.chat()
            before = route.calls.last.request.headers.get("authorization")
            # An operator runs `aigne-hub credentials add` against the same database.
            other = SqlStore(db_url)
            await other.open()
            added = await Admin(other).add_credential(
                ProviderKey("mock", STORED_KEY), SecretBox(key.encode())
            )
            await hub.app.load_stored_keys()  # what the hub does every 30 s
            await hub.chat()
            during = route.calls.last.request.headers.get("authorization")
            await Admin(other).remove_credential(added["id"])
            await other.close()
            await hub.app.load_stored_keys()
            await hub.chat()
            after = route.calls.last.request.headers.get("authorization")
        finally:
            await hub.client.aclose()
            await hub.app.shutdown()

    assert before is None and during == f"Bearer {STORED_KEY}" and after is None


def test_rotating_the_encryption_key_reseals_every_stored_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIGNE_HUB_ENCRYPTION_KEY", raising=False)
    config = tmp_path / "hub.toml"
    key_file = tmp_path / "hub.key"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/cli.db"\n'
        f'[security]\nencryption_key_file = "{key_file}"\n'
        '[providers.openai]\napi_keys = ["sk-from-config-0000"]\n'
    )
    assert main(["db", "upgrade", "--create", "--config", str(config)]) == 0
    for secret in (STORED_KEY, "sk-second-stored-key-0001"):
        assert main(["credentials", "add", "openai", "--key", secret, "--config", str(config)]) == 0
    old_key = key_file.read_bytes()
    capsys.readouterr()

    code = main(["credentials", "rotate-key", "--config", str(config), "--json"])

    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["resealed"] == 2
    new_key = key_file.read_bytes()
    assert new_key != old_key and oct(key_file.stat().st_mode)[-3:] == "600"
    assert not (tmp_path / "hub.key.new").exists()
    sealed = sealed_keys(tmp_path / "cli.db")
    opened = sorted(SecretBox(new_key).open(s) for s in sealed)
    assert opened == sorted([STORED_KEY, "sk-second-stored-key-0001"])
    with pytest.raises(ValueError, match="cannot be decrypted"):
        SecretBox(old_key).open(sealed[0])
    assert STORED_KEY not in out + err and new_key.decode() not in out + err


def test_a_key_from_the_environment_is_rotated_into_a_file_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old_key = Fernet.generate_key()
    monkeypatch.setenv("AIGNE_HUB_ENCRYPTION_KEY", old_key.decode())
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/cli.db"\n'
        '[providers.openai]\napi_keys = ["sk-from-config-0000"]\n'
    )
    assert main(["db", "upgrade", "--create", "--config", str(config)]) == 0
    assert main(["credentials", "add", "openai", "--key", STORED_KEY, "--config", str(config)]) == 0
    capsys.readouterr()

    refused = main(["credentials", "rotate-key", "--config", str(config)])
    _, why = capsys.readouterr()
    target = tmp_path / "rotated.key"
    rotated = main(
        ["credentials", "rotate-key", "--new-key-file", str(target), "--config", str(config)]
    )

    assert refused == 1 and "--new-key-file" in why
    assert rotated == 0
    [sealed] = sealed_keys(tmp_path / "cli.db")
    assert SecretBox(target.read_bytes()).open(sealed) == STORED_KEY


def sealed_keys(database: Path) -> list[str]:
    with closing(sqlite3.connect(database)) as connection:
        return [row[0] for row in connection.execute("SELECT sealed FROM ai_credentials")]


async def test_a_running_hub_follows_a_rotated_key_file(db_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "hub.key"
    key_file.write_bytes(Fernet.generate_key())
    keyless = ProviderSettings("mock", "openai", UPSTREAM, (), ("gpt-4o-mini",))
    settings = replace(
        make_settings(db_url),
        providers={"mock": keyless},
        encryption_key=None,
        encryption_key_file=str(key_file),
    )
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        route = upstream.post("/chat/completions").respond(
            json={"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
        )
        hub = await start_hub(settings, httpx.MockTransport(upstream.async_handler))
        try:
            old = SecretBox(key_file.read_bytes())
            await hub.admin.add_credential(ProviderKey("mock", STORED_KEY), old)
            await hub.app.load_stored_keys()
            # What `aigne-hub credentials rotate-key` does, with a reload at each step.
            new_key = Fernet.generate_key()
            key_file.write_bytes(new_key + b"\n" + key_file.read_bytes())
            await hub.app.load_stored_keys()  # what the hub does every 30 s
            both = SecretBox(key_file.read_bytes())
            await hub.admin.reseal_credentials(both, done=SecretBox(new_key))
            await hub.app.load_stored_keys()
            key_file.write_bytes(new_key)
            await hub.app.load_stored_keys()
            await hub.chat()
        finally:
            await hub.client.aclose()
            await hub.app.shutdown()

    assert route.calls.last.request.headers.get("authorization") == f"Bearer {STORED_KEY}"


async def test_a_hub_with_the_old_key_keeps_its_stored_keys_after_a_rotation(
    db_url: str,
) -> None:
    old_key = Fernet.generate_key()
    keyless = ProviderSettings("mock", "openai", UPSTREAM, (), ("gpt-4o-mini",))
    settings = replace(
        make_settings(db_url), providers={"mock": keyless}, encryption_key=old_key.decode()
    )
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        route = upstream.post("/chat/completions").respond(
            json={"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
        )
        hub = await start_hub(settings, httpx.MockTransport(upstream.async_handler))
        try:
            await hub.admin.add_credential(ProviderKey("mock", STORED_KEY), SecretBox(old_key))
            await hub.app.load_stored_keys()
            new = Fernet.generate_key()
            await hub.admin.reseal_credentials(SecretBox(new + b"," + old_key), done=SecretBox(new))
            with pytest.raises(ValueError, match="cannot be decrypted"):
                await hub.app.load_stored_keys()  # this hub was given the old key only
            await hub.chat()
        finally:
            await hub.client.aclose()
            await hub.app.shutdown()

    # The pool kept what it had, rather than calling the provider with no key at all.
    assert route.calls.last.request.headers.get("authorization") == f"Bearer {STORED_KEY}"


def test_a_rotation_cut_short_leaves_every_key_readable_and_can_be_run_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIGNE_HUB_ENCRYPTION_KEY", raising=False)
    real = tmp_path / "keys" / "hub.key"
    real.parent.mkdir()
    link = tmp_path / "hub.key"
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/cli.db"\n'
        f'[security]\nencryption_key_file = "{link}"\n'
        '[providers.openai]\napi_keys = ["sk-from-config-0000"]\n'
    )
    real.write_bytes(Fernet.generate_key())
    real.chmod(0o600)
    link.symlink_to(real)  # a key file mounted or linked into place
    assert main(["db", "upgrade", "--create", "--config", str(config)]) == 0
    assert main(["credentials", "add", "openai", "--key", STORED_KEY, "--config", str(config)]) == 0

    async def fails(*args: object, **kwargs: object) -> int:
        raise OSError("the database went away")

    monkeypatch.setattr(Admin, "reseal_credentials", fails)
    assert main(["credentials", "rotate-key", "--config", str(config)]) == 1
    midway = SecretBox(real.read_bytes())
    [sealed] = sealed_keys(tmp_path / "cli.db")
    assert len(midway.keys) == 2 and midway.open(sealed) == STORED_KEY
    monkeypatch.undo()
    monkeypatch.delenv("AIGNE_HUB_ENCRYPTION_KEY", raising=False)
    capsys.readouterr()

    assert main(["credentials", "rotate-key", "--config", str(config), "--json"]) == 0

    final = SecretBox(real.read_bytes())
    [sealed] = sealed_keys(tmp_path / "cli.db")
    assert len(final.keys) == 1 and final.open(sealed) == STORED_KEY
    assert link.is_symlink() and oct(real.stat().st_mode)[-3:] == "600"
    assert not [p for p in real.parent.iterdir() if p.name.endswith(".tmp")]


def _key_made_at(key_file: str, start_at: float) -> bytes | str:
    """In a process of its own: the key `credentials add` would use, made at one moment."""
    from hub.secrets import load_box

    time.sleep(max(0.0, start_at - time.time()))
    try:
        box = load_box(None, key_file, create=True)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    assert box is not None
    return box.keys[0]


def test_workers_making_the_key_file_at_once_all_use_one_key(tmp_path: Path) -> None:
    # Two workers adding the first provider keys at the same moment: one makes the file,
    # the other must read that key, never an empty file or a key of its own.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    files = [str(tmp_path / f"hub-{i}.key") for i in range(20)]
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        for key_file in files:
            start_at = time.time() + 0.3
            keys = list(pool.map(_key_made_at, [key_file] * 4, [start_at] * 4, timeout=30))
            assert all(isinstance(key, bytes) for key in keys), keys
            assert len(set(keys)) == 1
