"""The dashboard in a real headless Chromium (Debian's), driven by Playwright: a person signs
in with a one-time link, reads the overview, streams an answer in the playground from the
fake provider, and finds that call, with its credits, in the calls table.

Screenshots go to $AIGNE_HUB_SCREENSHOTS (the README's pictures: `AIGNE_HUB_SCREENSHOTS=docs
pytest tests/hub/test_dashboard_browser.py`), else to the test's temporary directory.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from middleware.money import to_credits, to_units
from tests.conftest import USER, Live, live_hub

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHAT_MODEL = "fake/gpt-4o-mini"
SLOW_MODEL = "fake/slow-gpt"  # the fake provider waits 0.2 s between its stream chunks
FAILING_MODEL = "fake/error-503"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-extensions",
    "--no-first-run",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is not installed and CI is set (.ci/run installs it)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; runs in CI)")
    return found


def csp_violations(page: Any) -> list[str]:
    """What the browser refuses under the pages' Content-Security-Policy, as it happens."""
    refused: list[str] = []
    page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return refused


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    # One database is enough here: the store's behaviour is tested on both elsewhere.
    async with live_hub(
        f"sqlite:///{tmp_path / 'hub.db'}", (CHAT_MODEL, SLOW_MODEL, FAILING_MODEL)
    ) as started:
        await started.admin.ensure_account(USER, is_admin=True)
        yield started


async def test_sign_in_overview_playground_and_calls_table(live: Live, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    shots = Path(os.environ.get("AIGNE_HUB_SCREENSHOTS") or tmp_path)
    # A little traffic first, so the overview has something to show.
    async with live.client() as api:
        for words in ("Say hi", "Write a haiku about the sea", "What is a gateway?"):
            body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": words}]}
            assert (await api.post("/v1/chat/completions", json=body)).status_code == 200
        failing = {"model": FAILING_MODEL, "messages": [{"role": "user", "content": "x"}]}
        assert (await api.post("/v1/chat/completions", json=failing)).status_code >= 500
    await live.wait_for_calls(4)
    token = await live.admin.create_login_link(USER)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 860})
        refused = csp_violations(page)
        try:
            # Sign in with the one-time link: its page's button spends it, and lands on the
            # overview.
            await page.goto(f"{live.hub_url}/login/link?token={token}")
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{live.hub_url}/dashboard")
            await expect(page.locator("#total-calls")).to_have_text("4")
            await expect(page.locator(".card").filter(has_text="Error rate")).to_contain_text(
                "25.0%"
            )
            assert await page.locator("svg.chart rect").count() >= 3  # bars were drawn
            await page.screenshot(path=str(shots / "overview.png"), full_page=True)
            # Choosing a window reloads the page (hub.js: the page has no inline script).
            await page.select_option("select[name=window]", "7d")
            await page.wait_for_url(f"{live.hub_url}/dashboard?window=7d")

            # The playground streams an answer: words show while the stream is still open.
            await page.get_by_role("link", name="Playground").click()
            await page.select_option("#model", SLOW_MODEL)
            await page.fill("#prompt", "Tell me about the lighthouse keeper")
            await page.click("#send")
            streaming = page.locator(".turn.assistant.streaming .text")
            await expect(streaming).to_contain_text("Hello", timeout=10_000)
            partial = await streaming.inner_text()
            meta = page.locator(".turn.assistant .meta")
            await expect(meta).to_contain_text("credits", timeout=15_000)
            answer = await page.locator(".turn.assistant .text").inner_text()
            assert partial and len(partial) < len(answer)
            shown = re.search(
                r"(\d+) in · (\d+) out tokens · ([\d.]+) credits", await meta.inner_text()
            )
            assert shown is not None
            await page.screenshot(path=str(shots / "playground.png"))

            # What the playground showed is what the hub recorded and billed.
            call = await live.wait_for_call(model=SLOW_MODEL, status="success")
            assert call["request_id"].startswith("playground-")
            assert (int(shown[1]), int(shown[2])) == (call["input_tokens"], call["output_tokens"])
            assert shown[3] == str(to_credits(call["credits"])) and call["credits"] > 0

            # And the calls table lists it first, with the same credits.
            await page.get_by_role("link", name="Calls").click()
            newest = page.locator("tr.call").first
            await expect(newest).to_have_attribute("data-call-id", call["id"])
            await expect(newest.locator("td.credits")).to_have_text(shown[3])
            await expect(page.locator("tr.call")).to_have_count(5)
        finally:
            await browser.close()
    assert refused == []

    async with httpx.AsyncClient(base_url=live.hub_url) as anonymous:
        # Without the session, the same pages send a browser to sign in.
        redirect = await anonymous.get("/dashboard", headers={"accept": "text/html"})
    assert redirect.status_code == 303 and redirect.headers["location"].startswith("/login")
    assert to_units("5") - (await live.admin.ledger(USER))["balance"] == sum(
        c["credits"] for c in await live.calls()
    )


async def test_forms_create_and_revoke_a_key_and_grant_credits(live: Live) -> None:
    from playwright.async_api import async_playwright, expect

    token = await live.admin.create_login_link(USER)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = await browser.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # "Revoke key ...?"
        refused = csp_violations(page)
        try:
            await page.goto(f"{live.hub_url}/login/link?token={token}&next=/dashboard/keys")
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{live.hub_url}/dashboard/keys")
            create = page.locator("form[data-api]")
            await create.locator("input[name=user]").fill("did:abt:dora")
            await create.locator("input[name=name]").fill("dora's laptop")
            await create.locator("input[name=models]").fill("mock/*, */gpt-4o")
            await create.get_by_role("button", name="Create key").click()
            secret = page.locator("[data-revealed]")
            await expect(secret).to_contain_text("ahk_")
            shown = await secret.inner_text()
            await page.get_by_role("button", name="Done").click()
            row = page.locator("tr", has_text="dora's laptop")
            await expect(row).to_contain_text("live")
            await expect(row).to_contain_text("mock/*, */gpt-4o")  # the models it may call
            await row.get_by_role("button", name="Revoke").click()
            await expect(page.locator("tr", has_text="dora's laptop")).to_contain_text("revoked")

            await page.goto(f"{live.hub_url}/dashboard/accounts")
            grant = page.locator("form[data-api]")
            await grant.locator("input[name=user]").fill("did:abt:dora")
            await grant.locator("input[name=amount]").fill("2.5")
            await grant.get_by_role("button", name="Grant").click()
            dora = page.locator("table").first.locator("tr", has_text="did:abt:dora")
            await expect(dora).to_contain_text("2.5")

            # Signing oneself out everywhere ends this session too: the reload goes to sign in.
            me = page.locator("table").first.locator("tr", has_text=USER)
            await me.get_by_role("button", name="Sign out everywhere").click()
            await page.wait_for_url(re.compile(r".*/login\?next="))
        finally:
            await browser.close()
    assert refused == []

    async with httpx.AsyncClient(base_url=live.hub_url) as client:
        revoked = await client.get(
            "/api/user/balance", headers={"authorization": f"Bearer {shown}"}
        )
    assert revoked.json()["error"]["code"] == "revoked_api_key"
    assert (await live.admin.ledger("did:abt:dora"))["granted"] == to_units("2.5")


async def test_a_keys_rate_limits_set_and_cleared_from_its_row(live: Live) -> None:
    from playwright.async_api import async_playwright, expect

    await live.admin.ensure_account(USER, is_admin=True)
    (key,) = await live.admin.list_keys(USER)
    token = await live.admin.create_login_link(USER)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = await browser.new_page()
        refused = csp_violations(page)
        try:
            await page.goto(f"{live.hub_url}/login/link?token={token}&next=/dashboard/keys")
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{live.hub_url}/dashboard/keys")
            limits = page.locator("tr", has_text=key["id"]).locator("form.limits")
            await limits.locator("input[name=rpm]").fill("9")
            await limits.locator("input[name=tpm]").fill("0")
            async with page.expect_response(lambda r: r.url.endswith("/limits")):
                await limits.get_by_role("button", name="Set").click()
            await page.wait_for_load_state()
            await expect(limits.locator("input[name=rpm]")).to_have_value("9")
            assert (await live.admin.list_keys(USER))[0]["rpm"] == 9

            # Emptied: back to the configured default (null), not left as it was.
            await limits.locator("input[name=rpm]").fill("")
            async with page.expect_response(lambda r: r.url.endswith("/limits")):
                await limits.get_by_role("button", name="Set").click()
            await page.wait_for_load_state()
            await expect(limits.locator("input[name=rpm]")).to_have_value("")
            await expect(limits.locator("input[name=tpm]")).to_have_value("0")
        finally:
            await browser.close()
    assert refused == []
    (listed,) = await live.admin.list_keys(USER)
    assert (listed["rpm"], listed["tpm"]) == (None, 0)
