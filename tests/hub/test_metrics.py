"""Prometheus metrics and the per-call log line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
import respx

from hub.metrics import Metrics
from hub.settings import ConfigError, load_settings
from middleware.call import Call, Identity, Usage
from middleware.money import to_units
from tests.conftest import PROVIDER_KEY, Hub, make_settings, start_hub
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio


async def test_metrics_count_calls_tokens_credits_and_errors(
    hub: Hub, mock_upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    route = mock_upstream.post("/chat/completions")
    route.side_effect = [
        httpx.Response(200, json=completion(9, 3)),
        httpx.Response(200, json=completion(9, 3)),
        httpx.Response(503, json={"error": {"message": "down"}}),
    ]
    caplog.set_level(logging.INFO, logger="aigne_hub.calls")

    for _ in range(3):
        await hub.chat()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app), base_url="http://hub.test"
    ) as anonymous:
        scraped = await anonymous.get("/metrics")

    assert scraped.status_code == 200
    text = scraped.text
    labels = 'provider="mock",model="mock/gpt-4o-mini",type="chatCompletion"'
    assert f'aigne_hub_calls_total{{{labels},status="success"}} 2' in text
    assert f'aigne_hub_calls_total{{{labels},status="failed"}} 1' in text
    assert f'aigne_hub_tokens_total{{{labels},kind="input"}} 18' in text
    # Two calls of 9 input and 3 output tokens at 0.000001 and 0.000002 a token, exactly.
    assert f"aigne_hub_credits_total{{{labels}}} 0.00003" in text
    assert 'aigne_hub_upstream_errors_total{provider="mock",code="upstream_error"} 1' in text
    assert "aigne_hub_calls_in_flight 0" in text
    assert 'aigne_hub_call_duration_seconds_count{provider="mock",type="chatCompletion"} 3' in text
    lines = [json.loads(r.message) for r in caplog.records if r.name == "aigne_hub.calls"]
    assert [line["status"] for line in lines] == ["success", "success", "failed"]
    assert lines[0]["input_tokens"] == 9 and lines[0]["credits"] == "0.000015"
    assert all(
        hub.key not in r.message and PROVIDER_KEY not in r.message and "Say hi" not in r.message
        for r in caplog.records
    )


async def test_the_log_line_carries_the_prompt_only_when_configured(
    db_url: str, mock_upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion(9, 3))
    caplog.set_level(logging.INFO, logger="aigne_hub.calls")
    hub = await start_hub(
        make_settings(db_url, log_prompts=True), httpx.MockTransport(mock_upstream.async_handler)
    )
    try:
        await hub.chat(messages=[{"role": "user", "content": "Say hi to the log"}])
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()

    [line] = [json.loads(r.message) for r in caplog.records if r.name == "aigne_hub.calls"]
    assert line["prompt"] == [{"role": "user", "content": "Say hi to the log"}]
    assert hub.key not in caplog.text and PROVIDER_KEY not in caplog.text


def test_logging_prompts_must_be_a_boolean(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text('[logging]\nprompts = "yes"\n')
    with pytest.raises(ConfigError, match="logging.prompts"):
        load_settings(config, env={})
    config.write_text("[logging]\nprompts = true\n")
    assert load_settings(config, env={}).log_prompts is True


async def test_made_up_model_names_cannot_grow_the_metrics(
    db_url: str, mock_upstream: respx.MockRouter
) -> None:
    # Self-hosted: no rate needed, so any `mock/<name>` reaches the provider and is counted.
    mock_upstream.post("/chat/completions").respond(json=completion(9, 3))
    hub = await start_hub(
        make_settings(db_url, mode="self-hosted"),
        httpx.MockTransport(mock_upstream.async_handler),
    )
    try:
        await hub.chat("mock/gpt-4o-mini")  # listed by the provider: its own label
        await hub.chat("mock/made-up-0")
        before = (await hub.client.get("/metrics")).text
        for i in range(1, 200):
            assert (await hub.chat(f"mock/made-up-{i}")).status_code == 200
        after = (await hub.client.get("/metrics")).text
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()

    def series(text: str) -> list[str]:  # each line without its value
        return [line.rsplit(" ", 1)[0] for line in text.splitlines()]

    assert series(after) == series(before)
    assert "made-up" not in after
    assert 'model="mock/gpt-4o-mini",type="chatCompletion",status="success"} 1' in after
    assert 'model="other",type="chatCompletion",status="success"} 200' in after


async def test_a_priced_model_keeps_its_own_label(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion(9, 3))
    await hub.admin.set_rate("mock/priced-only", "chatCompletion", input_rate=1, output_rate=1)

    assert (await hub.chat("mock/priced-only")).status_code == 200

    assert 'model="mock/priced-only"' in (await hub.client.get("/metrics")).text


def _settled_call(status: str = "success", charge: int = 0, seconds: float = 0.3) -> Call:
    call = Call(
        identity=Identity(account_id=1, user_did="did:abt:alice"),
        call_type="chatCompletion",
        model="mock/gpt-4o-mini",
        body={},
        raw_body=b"",
        provider="mock",
        usage=Usage(input_tokens=9, output_tokens=3),
        status=status,  # type: ignore[arg-type]
    )
    call.charge = charge
    # From zero: added to a perf_counter reading, 0.3 s can come back as 299 ms.
    call.started_clock = 0.0
    call.ended_clock = seconds
    return call


def test_workers_sharing_a_directory_each_scrape_the_whole_server(tmp_path: Path) -> None:
    one, two = Metrics(shared_dir=str(tmp_path)), Metrics(shared_dir=str(tmp_path))
    one.start()
    two.start()
    try:
        for _ in range(3):
            one.opened(_settled_call())
            one.settled(_settled_call(charge=to_units("0.1")))
        two.opened(_settled_call())
        two.settled(_settled_call("failed", seconds=70))
        two.opened(_settled_call())  # still in flight
        # Credit sums past a double's 2**53 units stay exact.
        two.opened(_settled_call())
        two.settled(_settled_call(charge=2**53 + 1))

        assert one.render() == two.render()
        text = one.render()
        labels = 'provider="mock",model="mock/gpt-4o-mini",type="chatCompletion"'
        assert f'aigne_hub_calls_total{{{labels},status="success"}} 4' in text
        assert f'aigne_hub_calls_total{{{labels},status="failed"}} 1' in text
        assert f'aigne_hub_tokens_total{{{labels},kind="input"}} 45' in text
        assert f"aigne_hub_credits_total{{{labels}}} 900720.2254740993" in text
        assert "aigne_hub_calls_in_flight 1" in text
        timed = 'provider="mock",type="chatCompletion"'
        assert f"aigne_hub_call_duration_seconds_count{{{timed}}} 5" in text
        assert f'aigne_hub_call_duration_seconds_bucket{{{timed},le="60.0"}} 4' in text
        assert f"aigne_hub_call_duration_seconds_sum{{{timed}}} 71.2" in text
        assert one.server_in_flight() == 1

        two.stop()  # a worker that exits (or is killed): its calls are no longer in flight,
        after = one.render()  # but what it counted still counts, so no counter goes back
        assert f'aigne_hub_calls_total{{{labels},status="success"}} 4' in after
        assert "aigne_hub_calls_in_flight 0" in after
    finally:
        one.stop()
        two.stop()


def test_one_process_writes_no_files_and_renders_as_before(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.start()
    metrics.opened(_settled_call())
    metrics.settled(_settled_call(charge=to_units("0.000015")))

    text = metrics.render()
    assert text.startswith("# TYPE aigne_hub_calls_in_flight gauge\naigne_hub_calls_in_flight 0\n")
    assert 'status="success"} 1\n' in text and "} 0.000015\n" in text
    assert list(tmp_path.iterdir()) == []
