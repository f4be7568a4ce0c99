"""Thousands of hostile requests, from a fixed seed, to every route and method of a hub on
each database: no 5xx, every error in the JSON shape, no traceback logged; and afterwards
every balance equal to its ledger and no call left `processing`.

FUZZ_EXAMPLES (requests per database) and FUZZ_SEED vary the run when hunting faults.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from middleware import model_call
from tests.fuzz import asgi
from tests.fuzz.sweep import price_sweep, sweep, tour
from tests.fuzz.traffic import plan
from tests.fuzz.world import World, every_route, faults_of, unreached

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3000"))
SEED = int(os.environ.get("FUZZ_SEED", "11"))
ROUNDS = 2
RELOAD_EVERY = 50  # requests between reloads of the stored provider keys


@dataclass
class Found:
    """One class of fault: how often, by which callers, and its smallest example."""

    count: int = 0
    auths: set[str] = field(default_factory=set)
    example: asgi.Request | None = None

    def add(self, request: asgi.Request) -> None:
        self.count += 1
        self.auths.add(request.auth)
        if self.example is None or request.size < self.example.size:
            self.example = request


def attack(
    strategy: st.SearchStrategy[asgi.Request],
    examples: int,
    seed_: int,
    check: Callable[[asgi.Request], None],
) -> None:
    @seed(seed_)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(request: asgi.Request) -> None:
        check(request)

    run()


def test_hostile_requests_get_clear_errors_and_leave_the_ledger_whole(
    db_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A settle the database refuses is retried for seconds; what this test asks is only
    # whether the call ends settled, so the retries go without pauses.
    monkeypatch.setattr(model_call, "SETTLE_RETRY_PAUSES", (0.0,) * 4, raising=False)
    caplog.set_level(logging.DEBUG, logger="aigne_hub")
    found: dict[str, Found] = {}
    answers: Counter[tuple[str, int]] = Counter()  # route, status: printed with pytest -s
    with asyncio.Runner() as runner:
        world = runner.run(World.start(db_url))
        try:
            routes = every_route(world.app)
            secrets = (world.ids, world.login_keys, world.link_tokens)

            def check(request: asgi.Request) -> None:
                logged = len(caplog.records)
                answer = runner.run(world.send(request))
                answers[request.route, answer.status] += 1
                faults: list[str | None] = [*faults_of(request, answer, caplog.records[logged:])]
                if sum(answers.values()) % RELOAD_EVERY == 0:
                    faults.append(runner.run(world.reload_stored_keys()))
                for fault in filter(None, faults):
                    found.setdefault(fault, Found()).add(request)

            for visit in [*tour(routes, *secrets), *sweep(routes), *price_sweep()]:
                check(visit)
            strategies = plan(routes, *secrets)
            per_share = EXAMPLES / ROUNDS / sum(share for _, share in strategies)
            # In rounds, so that what a later route did (a grant, a rate, a provider key)
            # meets the earlier routes too.
            for round_ in range(ROUNDS):
                for strategy, share in strategies:
                    attack(strategy, max(1, round(share * per_share)), SEED + round_, check)
            after = runner.run(world.ledger_faults()) + unreached(routes, answers)
        finally:
            runner.run(world.stop())
    print(
        *(f"{n:5} × {status} {route}" for (route, status), n in sorted(answers.items())), sep="\n"
    )
    report = [
        f"{fault} ×{f.count} [{', '.join(sorted(f.auths))}]\n    e.g. {f.example.describe()}"
        for fault, f in sorted(found.items())
        if f.example is not None
    ]
    assert not report + after, "\n".join([*report, *after])
