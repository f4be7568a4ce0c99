"""Signing people in: one-time links and pasted keys give a signed, HttpOnly session."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest

from hub.cli import main
from middleware.auth import SESSION_COOKIE
from tests.conftest import USER, Hub

pytestmark = pytest.mark.anyio


def browser(hub: Hub) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app),
        base_url="http://hub.test",
        follow_redirects=False,
    )


async def use_link(person: httpx.AsyncClient, token: str, **fields: str) -> httpx.Response:
    """What the button on a link's page does: a POST of the form it carries."""
    return await person.post("/login/link", data={"token": token, **fields})


async def test_a_one_time_link_signs_in_once(hub: Hub) -> None:
    token = await hub.admin.create_login_link(USER)
    async with browser(hub) as person:
        signed_in = await use_link(person, token)
        cookie = signed_in.headers["set-cookie"]
        balance = await person.get("/api/user/balance")
        again = await use_link(person, token)

    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert balance.status_code == 200 and balance.json()["user_did"] == USER
    assert again.status_code == 401  # spent


async def test_opening_a_link_shows_a_button_and_only_its_post_spends_it(hub: Hub) -> None:
    # A mail scanner or a chat app's link preview fetches the link before its owner does.
    token = await hub.admin.create_login_link(USER)
    async with browser(hub) as scanner, browser(hub) as person:
        previews = [
            await scanner.get("/login/link", params={"token": token, "next": "/dashboard"})
            for _ in range(2)
        ]
        scanner_in = await scanner.get("/api/user/balance")
        signed_in = await use_link(person, token, next="/dashboard")

    page = previews[0]
    assert [r.status_code for r in previews] == [200, 200] and "set-cookie" not in page.headers
    assert '<form method="post" action="/login/link">' in page.text
    assert f'name="token"\nvalue="{token}"' in page.text and 'value="/dashboard"' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert scanner_in.status_code == 401
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/dashboard"


async def test_another_site_cannot_spend_a_link_for_a_visitor(hub: Hub) -> None:
    # Its own link, posted from its page, would sign the visitor in as the site's owner.
    token = await hub.admin.create_login_link(USER)
    async with browser(hub) as person:
        forged = await person.post(
            "/login/link", data={"token": token}, headers={"origin": "https://evil.example"}
        )
        own = await person.post(
            "/login/link", data={"token": token}, headers={"origin": "http://hub.test"}
        )
    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    assert own.status_code == 303  # the refused post did not spend the link


async def test_an_expired_or_unknown_link_does_not_sign_in(hub: Hub) -> None:
    expired = await hub.admin.create_login_link(USER, minutes=-1)
    async with browser(hub) as person:
        responses = [await use_link(person, t) for t in (expired, "made-up")]
        assert "set-cookie" not in responses[0].headers
        assert (await person.get("/api/user/balance")).status_code == 401
    assert {r.status_code for r in responses} == {401}


async def test_a_pasted_key_signs_in_and_logout_signs_out(hub: Hub) -> None:
    async with browser(hub) as person:
        page = await person.get("/login")
        wrong = await person.post("/login", data={"key": "ahk_not-a-key"})
        right = await person.post("/login", data={"key": hub.key})
        inside = await person.get("/api/user/calls")
        await person.post("/logout")
        outside = await person.get("/api/user/calls")

    assert page.status_code == 200 and 'name="key"' in page.text
    assert wrong.status_code == 401 and "not a valid hub key" in wrong.text
    assert right.status_code == 303 and inside.status_code == 200
    assert outside.status_code == 401


def test_the_cli_prints_a_link_that_works_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/hub.db"\n[server]\nport = 9999\n')

    code = main(
        ["admin", "login-link", "--user", USER, "--config", str(config), "--json", "--create"]
    )

    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["url"].startswith("http://127.0.0.1:9999/login/link?token=")


async def test_a_browser_without_a_session_is_sent_to_sign_in_and_back(hub: Hub) -> None:
    async with browser(hub) as person:
        page = await person.get("/api/user/balance", headers={"accept": "text/html"})
        program = await person.get("/api/user/balance")  # no HTML wanted: a JSON 401
        form = await person.get(page.headers["location"])
        signed_in = await person.post("/login", data={"key": hub.key, "next": "/api/user/calls"})
        elsewhere = await person.post("/login", data={"key": hub.key, "next": "//evil.example/x"})

    assert (
        page.status_code == 303
        and page.headers["location"] == "/login?next=%2Fapi%2Fuser%2Fbalance"
    )
    assert program.status_code == 401
    assert 'name="next" value="/api/user/balance"' in form.text
    assert signed_in.headers["location"] == "/api/user/calls"
    assert elsewhere.headers["location"] == "/"  # never off to another site


async def test_a_session_cannot_post_a_model_call_as_a_form(hub: Hub) -> None:
    token = await hub.admin.create_login_link(USER)
    async with browser(hub) as person:
        await use_link(person, token)
        forged = await person.post(
            "/v1/chat/completions",
            content=b'{"model": "mock/gpt-4o-mini", "messages": []}',
            headers={"content-type": "text/plain"},
        )

    assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf"
    assert await hub.calls() == []


async def test_revoking_the_key_signed_in_with_ends_the_session(hub: Hub) -> None:
    _, key = await hub.admin.create_key(USER, name="laptop")
    async with browser(hub) as person:
        await person.post("/login", data={"key": key})
        before = await person.get("/api/user/balance")
        key_id = next(k["id"] for k in await hub.admin.list_keys(USER) if k["name"] == "laptop")
        await hub.admin.revoke_key(key_id)
        await anyio.sleep(0.3)  # key lookups are cached for 0.2 s in these tests
        after = await person.get("/api/user/balance")
        page = await person.get("/dashboard", headers={"accept": "text/html"})

    assert before.status_code == 200
    assert after.status_code == 401 and page.headers["location"].startswith("/login")


async def test_another_site_cannot_sign_a_visitor_in_or_out(hub: Hub) -> None:
    async with browser(hub) as person:
        forged = await person.post(
            "/login", data={"key": hub.key}, headers={"origin": "https://evil.example"}
        )
        own = await person.post(
            "/login", data={"key": hub.key}, headers={"origin": "http://hub.test"}
        )
        forged_out = await person.post("/logout", headers={"origin": "https://evil.example"})
        still_in = await person.get("/api/user/balance")

    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    assert own.status_code == 303
    assert forged_out.status_code == 403 and still_in.status_code == 200


async def test_signing_out_ends_the_session_everywhere_and_a_new_one_works(hub: Hub) -> None:
    async with browser(hub) as laptop, browser(hub) as phone:
        await laptop.post("/login", data={"key": hub.key})
        cookie = laptop.cookies[SESSION_COOKIE]
        phone.cookies.set(SESSION_COOKIE, cookie)  # the same session, copied elsewhere
        before = await phone.get("/api/user/balance")
        await laptop.post("/logout")
        copied = await phone.get("/api/user/balance")
        again = await laptop.post("/login", data={"key": hub.key})
        inside = await laptop.get("/api/user/balance")

    assert before.status_code == 200
    assert copied.status_code == 401  # signing out voided every copy
    assert copied.json()["error"]["code"] == "invalid_session"
    assert again.status_code == 303 and inside.status_code == 200


async def test_a_voided_cookie_cannot_sign_its_owner_out_again(hub: Hub) -> None:
    async with browser(hub) as owner, browser(hub) as thief:
        await owner.post("/login", data={"key": hub.key})
        thief.cookies.set(SESSION_COOKIE, owner.cookies[SESSION_COOKIE])  # copied
        await owner.post("/logout")  # voids the copy too
        await owner.post("/login", data={"key": hub.key})
        await thief.post("/logout")  # the stale copy tries to end the new session
        still_in = await owner.get("/api/user/balance")

    assert still_in.status_code == 200
