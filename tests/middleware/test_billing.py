"""Pricing is exact integer arithmetic on units of 10**-10 credit."""

from __future__ import annotations

from decimal import Decimal

import pytest
from starlette.types import Message, Receive, Scope, Send

from middleware.billing import BillingMiddleware, price
from middleware.call import CALL_KEY, Call, Identity, Usage
from middleware.credit import BYTES_PER_TOKEN, worst_case
from middleware.money import to_credits, to_units
from middleware.ports import Rate


def test_chat_price_matches_decimal_arithmetic() -> None:
    rate = Rate(
        "openai/gpt-4o",
        "chatCompletion",
        input_rate=to_units("0.0000025"),
        output_rate=to_units("0.00001"),
        cached_rate=to_units("0.00000125"),
    )
    usage = Usage(input_tokens=1_234_567, output_tokens=89_012, cached_tokens=1_000_000)

    charge = to_credits(price(usage, rate))

    expected = (
        Decimal(234_567) * Decimal("0.0000025")
        + Decimal(1_000_000) * Decimal("0.00000125")
        + Decimal(89_012) * Decimal("0.00001")
    )
    assert charge == expected == Decimal("2.7265375")


def test_cached_tokens_fall_back_to_the_input_rate() -> None:
    rate = Rate("m", "chatCompletion", input_rate=10, output_rate=20)
    assert price(Usage(input_tokens=100, cached_tokens=40), rate) == 100 * 10


def test_cache_writes_have_their_own_rate_and_fall_back_to_the_input_rate() -> None:
    rate = Rate("m", "chatCompletion", input_rate=10, output_rate=20, cache_write_rate=12)
    usage = Usage(input_tokens=100, output_tokens=1, cached_tokens=30, cache_write_tokens=50)
    without = Rate("m", "chatCompletion", input_rate=10, output_rate=20)

    # 20 plain at 10, 30 read at 10 (no cached rate), 50 written at 12, 1 out at 20.
    assert price(usage, rate) == 20 * 10 + 30 * 10 + 50 * 12 + 20
    assert price(usage, without) == 100 * 10 + 20
    # Never more tokens written than the prompt holds beside its cache reads.
    assert price(Usage(input_tokens=10, cached_tokens=8, cache_write_tokens=50), rate) == (
        8 * 10 + 2 * 12
    )


def test_a_hold_assumes_the_prompt_may_all_be_written_to_the_cache() -> None:
    call = Call(
        identity=Identity(account_id=1, user_did="u"),
        call_type="chatCompletion",
        model="m",
        body={"max_tokens": 10},
        raw_body=b"x" * 399,
    )
    dear = Rate("m", "chatCompletion", input_rate=10, output_rate=20, cache_write_rate=13)
    cheap = Rate("m", "chatCompletion", input_rate=10, output_rate=20, cache_write_rate=1)

    prompt = 399 // BYTES_PER_TOKEN + 1
    assert worst_case(call, dear, 4096) == prompt * 13 + 10 * 20
    assert worst_case(call, cheap, 4096) == prompt * 10 + 10 * 20


def test_float_would_drift_but_units_do_not() -> None:
    rate = Rate("m", "chatCompletion", input_rate=to_units("0.1"), output_rate=0)
    total = sum(price(Usage(input_tokens=1), rate) for _ in range(10))
    assert to_credits(total) == Decimal(1)
    assert sum([0.1] * 10) != 1.0  # what a float ledger would have recorded


def test_image_price_is_per_image_plus_prompt_tokens() -> None:
    rate = Rate("m", "imageGeneration", input_rate=5, output_rate=0, image_rate=1000)
    assert price(Usage(input_tokens=3, images=4), rate) == 4 * 1000 + 3 * 5


def test_money_refuses_more_precision_than_the_ledger_keeps() -> None:
    assert to_units("0.0000000001") == 1
    with pytest.raises(ValueError):
        to_units("0.00000000001")
    with pytest.raises(ValueError):
        to_units("NaN")


@pytest.mark.parametrize(
    ("units", "shown"),
    [
        (0, "0"),
        (25, "0.0000000025"),
        (-5 * 10**9, "-0.5"),
        (10**40, "1" + "0" * 30),
        (123 * 10**10 + 456, "123.0000000456"),
    ],
)
def test_credits_show_exactly_at_any_size(units: int, shown: str) -> None:
    assert format(to_credits(units), "f") == shown
    assert to_units(to_credits(units)) == units


# -- the middleware: prices with the rate the credit check put on the call ---------------


def _chat_call() -> Call:
    return Call(
        identity=Identity(account_id=1, user_did="u"),
        call_type="chatCompletion",
        model="m",
        body={},
        raw_body=b"{}",
    )


async def _billed(call: Call, *, enabled: bool = True, last: bool = True) -> Call:
    """Run one call through BillingMiddleware around an app that reports 3 + 4 tokens."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        call.usage = Usage(3, 4)
        if last:
            await send({"type": "http.response.body", "body": b"{}"})
            call.answered = True

    async def send(message: Message) -> None:
        pass

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    scope = {"type": "http", CALL_KEY: call}
    await BillingMiddleware(app, enabled=enabled)(scope, receive, send)
    return call


@pytest.mark.anyio
async def test_a_call_without_a_rate_on_it_is_charged_nothing_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No credit check in front put a rate on the call: billing looks nothing up itself.
    call = await _billed(_chat_call())

    assert call.charge == 0
    assert f"call {call.id} has no rate" in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize("last", [True, False])
async def test_a_call_is_charged_at_the_rate_it_was_admitted_at(last: bool) -> None:
    call = _chat_call()
    call.rate = Rate("m", "chatCompletion", input_rate=10, output_rate=100)

    # Priced as the last message goes out, or (a hang-up) when the app returns.
    assert (await _billed(call, last=last)).charge == 3 * 10 + 4 * 100


@pytest.mark.anyio
async def test_with_billing_off_nothing_is_charged_or_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    call = await _billed(_chat_call(), enabled=False)

    assert call.charge == 0 and "no rate" not in caplog.text


@pytest.mark.anyio
async def test_a_request_that_is_no_model_call_passes_through_untouched() -> None:
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    await BillingMiddleware(app)({"type": "http"}, receive, send)

    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
