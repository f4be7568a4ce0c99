"""Sessions an operator can end, and pages that hold up against framing, forged Host headers
and a TLS-ending proxy."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from base64 import b64encode
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import anyio.to_thread
import httpx
import pytest
import uvicorn

from hub.cli import _parser, main
from hub.settings import ConfigError, load_settings
from hub.store import SqlStore
from hub.store.admin import Admin
from tests.conftest import USER, Hub, make_settings, start_hub

pytestmark = pytest.mark.anyio

BOB = "did:abt:bob"
DASHBOARD_PAGES = (
    "/dashboard",
    "/dashboard/calls",
    "/dashboard/keys",
    "/dashboard/accounts",
    "/dashboard/rates",
    "/dashboard/providers",
    "/playground",
)


def browser(hub: Hub, key: str | None = None) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app),
        base_url="http://hub.test",
        follow_redirects=False,
        headers=headers,
    )


@pytest.fixture
async def admin_hub(hub: Hub) -> Hub:
    """The hub's test user (hub.key, hub.client) is an admin; Bob is a user."""
    await hub.admin.ensure_account(USER, is_admin=True)
    await anyio.sleep(0.3)  # key lookups are cached for 0.2 s in these tests
    return hub


async def signed_in_by_link(hub: Hub, did: str) -> httpx.AsyncClient:
    person = browser(hub)
    token = await hub.admin.create_login_link(did)
    assert (await person.post("/login/link", data={"token": token})).status_code == 303
    return person


async def signed_in_by_key(hub: Hub, key: str) -> httpx.AsyncClient:
    person = browser(hub)
    assert (await person.post("/login", data={"key": key})).status_code == 303
    return person


# -- sessions an operator can end ----------------------------------------------------------


async def test_an_admin_revoking_a_users_keys_ends_their_link_session(admin_hub: Hub) -> None:
    hub = admin_hub
    laptop_id, _ = await hub.admin.create_key(BOB, name="laptop")
    phone_id, _ = await hub.admin.create_key(BOB, name="phone")
    bob = await signed_in_by_link(hub, BOB)
    before = await bob.get("/api/user/balance")

    for key_id in (laptop_id, phone_id):
        assert (await hub.client.delete(f"/api/admin/keys/{key_id}")).status_code == 200
    after = await bob.get("/api/user/balance")
    new_key = await bob.post("/api/user/keys", json={"name": "mine again"})
    await bob.aclose()

    assert before.status_code == 200
    assert after.status_code == 401 and after.json()["error"]["code"] == "invalid_session"
    assert new_key.status_code == 401
    assert [k["id"] for k in await hub.admin.list_keys(BOB)] == [laptop_id, phone_id]


async def test_an_admin_signs_a_user_out_everywhere_and_their_keys_keep_working(
    admin_hub: Hub,
) -> None:
    hub = admin_hub
    _, bob_key = await hub.admin.create_key(BOB)
    by_link = await signed_in_by_link(hub, BOB)
    by_key = await signed_in_by_key(hub, bob_key)
    alices = await signed_in_by_link(hub, USER)
    async with browser(hub, bob_key) as program:
        refused = await program.post(f"/api/admin/accounts/{BOB}/sign-out")  # not an admin

        signed_out = await hub.client.post(f"/api/admin/accounts/{BOB}/sign-out")
        unknown = await hub.client.post("/api/admin/accounts/did:abt:nobody/sign-out")
        sessions = [await s.get("/api/user/balance") for s in (by_link, by_key, alices)]
        with_key = await program.get("/api/user/balance")
    for person in (by_link, by_key, alices):
        await person.aclose()

    assert refused.status_code == 403
    assert signed_out.status_code == 200 and signed_out.json()["signed_out"] is True
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert [r.status_code for r in sessions] == [401, 401, 200]  # Alice is still in
    assert with_key.status_code == 200  # keys are for programs: revoke them to stop them


async def test_revoking_ones_own_key_ends_only_the_sessions_opened_with_it(hub: Hub) -> None:
    laptop_id, laptop = await hub.admin.create_key(USER, name="laptop")
    by_link = await signed_in_by_link(hub, USER)
    by_laptop = await signed_in_by_key(hub, laptop)

    revoked = await by_link.delete(
        f"/api/user/keys/{laptop_id}", headers={"content-type": "application/json"}
    )
    await anyio.sleep(0.3)  # key lookups are cached for 0.2 s in these tests
    still_in = await by_link.get("/api/user/balance")
    laptop_out = await by_laptop.get("/api/user/balance")
    await by_link.aclose()
    await by_laptop.aclose()

    assert revoked.status_code == 200
    assert still_in.status_code == 200 and laptop_out.status_code == 401


async def test_the_cli_signs_a_user_out_and_revoking_their_key_does_too(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    hub = await start_hub(make_settings(f"sqlite:///{db}"), None)
    config = tmp_path / "hub.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\n')
    try:
        key_id, _ = await hub.admin.create_key(BOB)
        first = await signed_in_by_link(hub, BOB)
        code = await anyio.to_thread.run_sync(
            main, ["admin", "sign-out", "--user", BOB, "--config", str(config)]
        )
        after_sign_out = await first.get("/api/user/balance")
        second = await signed_in_by_link(hub, BOB)
        revoked = await anyio.to_thread.run_sync(
            main, ["keys", "revoke", key_id, "--config", str(config)]
        )
        after_revoke = await second.get("/api/user/balance")
        await first.aclose()
        await second.aclose()
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()

    assert code == 0 and after_sign_out.status_code == 401
    assert revoked == 0 and after_revoke.status_code == 401


async def test_the_accounts_page_has_a_sign_out_button_for_each_account(admin_hub: Hub) -> None:
    await admin_hub.admin.ensure_account(BOB)

    page = (await admin_hub.client.get("/dashboard/accounts")).text

    for did in (USER, BOB):
        action = f'data-api="/api/admin/accounts/{did.replace(":", "%3A")}/sign-out"'
        assert action in page and 'data-method="POST"' in page


# -- security headers -----------------------------------------------------------------------


def csp_of(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return dict(
        (part.strip().split(" ", 1) + [""])[:2] for part in policy.split(";") if part.strip()
    )


async def test_every_page_and_answer_carries_the_security_headers(admin_hub: Hub) -> None:
    hub = admin_hub
    async with browser(hub) as anonymous:
        public = [
            await anonymous.get(path)
            for path in ("/login", "/login/link?token=x", "/health", "/__blocklet__.js")
        ]
    person = await signed_in_by_key(hub, hub.key)
    private = [
        await person.get(path)
        for path in (*DASHBOARD_PAGES, "/static/hub.css", "/static/hub.js", "/api/user/balance")
    ]
    await person.aclose()

    for response in (*public, *private):
        assert response.status_code == 200, response.url
        headers = response.headers
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        policy = csp_of(response)
        assert policy["frame-ancestors"] == "'none'"
        assert policy["script-src"] == "'self'"  # no inline script anywhere


async def test_the_pages_need_nothing_their_policy_forbids(admin_hub: Hub) -> None:
    """What a browser would refuse under the policy: inline scripts, handlers and style
    attributes, and inline styles whose hash the policy does not name."""
    async with browser(admin_hub) as anonymous:
        pages = [await anonymous.get("/login"), await anonymous.get("/login/link?token=x")]
    person = await signed_in_by_key(admin_hub, admin_hub.key)
    pages += [await person.get(path) for path in DASHBOARD_PAGES]
    await person.aclose()

    for page in pages:
        html = page.text
        allowed_styles = csp_of(page)["style-src"].split()
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), page.url
        assert not re.search(r"\son[a-z]+=", html), page.url
        assert not re.search(r"\sstyle=", html), page.url
        for style in re.findall(r"<style>(.*?)</style>", html, re.S):
            digest = b64encode(hashlib.sha256(style.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in allowed_styles, page.url


# -- the Host header is never the hub's address ----------------------------------------------


async def test_discovery_and_redirects_ignore_a_forged_host(hub: Hub) -> None:
    forged = {"host": "evil.example"}
    async with browser(hub, hub.key) as client:
        script = await client.get("/__blocklet__.js", headers=forged)
        as_json = await client.get("/__blocklet__.js?type=json", headers=forged)
        slash = await client.get("/dashboard/?window=1h", headers=forged)
        no_route = await client.get("/nothing-here/", headers=forged)
        protocol_relative = await client.get("/%2Fevil.example/", headers=forged)

    assert "evil.example" not in script.text
    assert as_json.json()["appUrl"] == "http://127.0.0.1:8090"  # where the hub listens
    assert slash.status_code == 307 and slash.headers["location"] == "/dashboard?window=1h"
    assert no_route.status_code == 404
    assert protocol_relative.status_code == 404


async def test_a_configured_public_url_is_the_address_and_makes_the_cookie_secure(
    db_url: str,
) -> None:
    settings = replace(make_settings(db_url), public_url="https://hub.example/")
    hub = await start_hub(settings, None)
    try:
        async with browser(hub) as person:
            found = (await person.get("/__blocklet__.js?type=json")).json()
            signed_in = await person.post("/login", data={"key": hub.key})
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()

    assert found["appUrl"] == "https://hub.example"
    assert "secure" in signed_in.headers["set-cookie"].lower()


async def test_sign_in_behind_a_proxy_that_rewrites_host_counts_the_public_url_as_own(
    db_url: str,
) -> None:
    # nginx sends its upstream's address as Host by default; the browser's Origin is the
    # public address, which must count as this hub's own, and another site's still not.
    settings = replace(make_settings(db_url), public_url="https://hub.example/")
    hub = await start_hub(settings, None)
    proxied = {"host": "127.0.0.1:8080"}
    try:
        async with browser(hub) as person:
            own = await person.post(
                "/login",
                data={"key": hub.key},
                headers={**proxied, "origin": "https://hub.example"},
            )
            forged = await person.post(
                "/login",
                data={"key": hub.key},
                headers={**proxied, "origin": "https://evil.example"},
            )
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()

    assert own.status_code == 303
    assert "set-cookie" in own.headers
    assert forged.status_code == 403
    assert "set-cookie" not in forged.headers


def test_public_url_is_read_from_the_file_or_environment_and_checked(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(
        '[server]\npublic_url = "https://hub.example/"\nforwarded_allow_ips = ["10.0.0.0/8"]\n'
    )

    from_file = load_settings(config, env={})
    from_env = load_settings(None, env={"AIGNE_HUB_PUBLIC_URL": "http://10.1.2.3:80"})
    wildcard = load_settings(None, env={"AIGNE_HUB_HOST": "0.0.0.0", "AIGNE_HUB_PORT": "9000"})

    assert from_file.public_address == "https://hub.example"
    assert from_file.forwarded_allow_ips == ("10.0.0.0/8",)
    assert from_env.public_address == "http://10.1.2.3:80"
    assert wildcard.public_address == "http://127.0.0.1:9000"
    for bad in ("ftp://hub.example", "hub.example", "https://hub.example/?next=x", "http://[::1"):
        with pytest.raises(ConfigError) as caught:
            load_settings(None, env={"AIGNE_HUB_PUBLIC_URL": bad})
        assert caught.value.key == "server.public_url"
    config.write_text('[server]\nforwarded_allow_ips = ["a proxy"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    assert caught.value.key == "server.forwarded_allow_ips"


def test_the_cli_prints_links_at_the_public_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/hub.db"\n'
        '[server]\npublic_url = "https://hub.example"\n'
    )

    code = main(
        ["admin", "login-link", "--user", USER, "--config", str(config), "--json", "--create"]
    )

    assert code == 0 and '"url": "https://hub.example/login/link?token=' in capsys.readouterr().out


# -- behind a proxy that ends TLS ------------------------------------------------------------


@contextmanager
def served(config: uvicorn.Config) -> Iterator[str]:
    """`aigne-hub serve`'s uvicorn configuration, running in a thread; its URL."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the hub did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
async def user_key(tmp_path: Path) -> AsyncIterator[str]:
    store = SqlStore(f"sqlite:///{tmp_path / 'hub.db'}")
    await store.open()
    _, key = await Admin(store).create_key(USER)
    yield key
    await store.close()


@pytest.mark.parametrize(
    ("options", "secure"),
    [
        pytest.param(("--forwarded-allow-ips", "127.0.0.1"), True, id="trusted-proxy"),
        pytest.param(("--forwarded-allow-ips", "10.9.9.9"), False, id="another-proxy"),
        pytest.param((), False, id="nobody-trusted"),
    ],
)
async def test_a_trusted_proxys_https_makes_the_cookie_secure(
    tmp_path: Path, user_key: str, options: tuple[str, ...], secure: bool
) -> None:
    from hub.cli import server_config

    settings = make_settings(f"sqlite:///{tmp_path / 'hub.db'}")
    args = _parser().parse_args(
        ["serve", "--host", "127.0.0.1", "--port", "0", "--log-level", "warning", *options]
    )
    with served(server_config(settings, args)) as url:
        async with httpx.AsyncClient(base_url=url) as proxy:
            signed_in = await proxy.post(
                "/login",
                data={"key": user_key},
                headers={"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.7"},
            )

    assert signed_in.status_code == 303
    assert ("secure" in signed_in.headers["set-cookie"].lower()) is secure
