"""Measure the hub against the floor, in one run on one machine.

    python bench/run.py [--seconds 5] [--requests 400] [--workers 2] [--limits memory|redis]
                        [--database postgresql://...] [--accounts 64]

Starts the example fake provider, the floor (bench/floor.py: a bare pass-through proxy)
and the hub with its full middleware stack on SQLite, each one uvicorn worker in its own
process, then prints for each: added latency over calling the provider directly at one
request at a time (p50, p99), requests/s at 64 concurrent, and time to first byte of a
stream. The hub's figures are also given as ratios to the floor's, since this machine is
shared and absolute numbers drift from run to run.

`--database` runs the hub on another database (an empty PostgreSQL one, say) instead of
a new SQLite file. `--accounts N` spreads the throughput rounds over N accounts, a key
each (one hot account, the default, against many: every call's hold and charge update
its account's row).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BODY = {"model": "fake/gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}]}


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(url) as response:
                    await response.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def one(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: dict[str, object]
) -> tuple[float, float]:
    """(time to first byte, total) for one request, in seconds."""
    started = time.perf_counter()
    async with session.post(url, json=body, headers=headers) as response:
        first = None
        async for _ in response.content.iter_any():
            if first is None:
                first = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
    return first or 0.0, time.perf_counter() - started


async def sequential(url: str, headers: dict[str, str], n: int, stream: bool) -> list[float]:
    body = {**BODY, "stream": stream}
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            await one(session, url, headers, body)
        results = [await one(session, url, headers, body) for _ in range(n)]
    return [r[0] if stream else r[1] for r in results]


async def throughput(
    url: str, headers: list[dict[str, str]], seconds: float, workers: int
) -> float:
    """Requests/s at `workers` concurrent; worker i calls with headers[i % len(headers)]."""
    done = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=workers)) as session:

        async def worker(mine: dict[str, str]) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await one(session, url, mine, BODY)
                done += 1

        await asyncio.gather(*(worker(headers[i % len(headers)]) for i in range(workers)))
    return done / seconds


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def hub_setup(env: dict[str, str], accounts: int) -> list[str]:
    """A key (with credit) for each of `accounts` accounts, and the fake model's rate."""

    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "hub.cli", *args],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    keys = []
    for n in range(accounts):
        user = f"did:abt:bench{n}"
        # The hub has not run yet: the first command makes its database.
        create = ["--create"] if n == 0 else []
        made = cli("keys", "create", "--user", user, *create, "--json")
        keys.append(json.loads(made)["key"])
        cli("credits", "grant", user, "1000000")
    cli("rates", "set", "fake/gpt-4o-mini", "--input", "0.15", "--output", "0.6", "--per-million")
    return [str(key) for key in keys]


async def measure(
    name: str,
    url: str,
    headers: dict[str, str],
    args: argparse.Namespace,
    direct: dict[str, float] | None,
) -> dict[str, float]:
    latency = await sequential(url, headers, args.requests, stream=False)
    ttfb = await sequential(url, headers, args.requests // 2, stream=True)
    figures = {
        "p50": statistics.median(latency) * 1000,
        "p99": pct(latency, 0.99) * 1000,
        "ttfb": statistics.median(ttfb) * 1000,
    }
    if direct is not None:
        figures["added_p50"] = figures["p50"] - direct["p50"]
        figures["added_p99"] = figures["p99"] - direct["p99"]
        figures["added_ttfb"] = figures["ttfb"] - direct["ttfb"]
    return figures


def _limits(where: str, tmp: str) -> str:
    if where == "off":
        return ""
    never = "{ rpm = 1000000000, tpm = 1000000000000, concurrent = 1000000 }"
    table = f"[rate_limits]\nkey = {never}\naccount = {never}\n"
    if where == "redis":
        prefix = Path(tmp).name  # this run's own keys
        table += f'[redis]\nurl = "redis://127.0.0.1:6379/0"\nprefix = "{prefix}"\n'
    return table


async def main() -> None:
    parser = argparse.ArgumentParser(description="hub vs floor")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each round")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per target")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument(
        "--workers", default="1", help="the hub's worker processes (serve --workers)"
    )
    parser.add_argument(
        "--limits",
        choices=("off", "memory", "redis"),
        default="off",
        help="rate limits never reached on every key and account (rpm, tpm, at once), counted "
        "in the process or in Redis at 127.0.0.1:6379: what the limits cost",
    )
    parser.add_argument("--database", help="the hub's database URL (default: a new SQLite file)")
    parser.add_argument("--accounts", type=int, default=1, help="accounts the load is spread on")
    args = parser.parse_args()
    ports = {"fake": 8300, "floor": 8301, "hub": 8302}
    tmp = tempfile.mkdtemp(prefix="aigne-hub-bench-")
    config = Path(tmp) / "hub.toml"
    config.write_text(
        f'[server]\nport = {ports["hub"]}\n[database]\nurl = "{args.database or f"sqlite:///{tmp}/bench.db"}"\n'
        f'[providers.fake]\nbase_url = "http://127.0.0.1:{ports["fake"]}/v1"\n'
        'api_keys = ["bench"]\n' + _limits(args.limits, tmp)
    )
    env = {**os.environ, "AIGNE_HUB_CONFIG": str(config)}
    procs = [start(["examples/fake_provider.py", "--port", str(ports["fake"])])]
    try:
        await wait_up(f"http://127.0.0.1:{ports['fake']}/v1/models")
        procs.append(
            start(
                [
                    "bench/floor.py",
                    "--port",
                    str(ports["floor"]),
                    "--upstream",
                    f"http://127.0.0.1:{ports['fake']}",
                ]
            )
        )
        keys = hub_setup(env, args.accounts)
        serve = ["-m", "hub.cli", "serve", "--log-level", "error", "--workers", args.workers]
        procs.append(start(serve, env=env))
        await wait_up(f"http://127.0.0.1:{ports['floor']}/v1/models")
        await wait_up(f"http://127.0.0.1:{ports['hub']}/health")

        path = "/v1/chat/completions"
        auths = [{"authorization": f"Bearer {key}"} for key in keys]
        targets = {
            "direct": (f"http://127.0.0.1:{ports['fake']}{path}", [{}]),
            "floor": (f"http://127.0.0.1:{ports['floor']}{path}", [{}]),
            "hub": (f"http://127.0.0.1:{ports['hub']}{path}", auths),
        }
        direct = await measure("direct", targets["direct"][0], {}, args, None)
        floor = await measure("floor", targets["floor"][0], {}, args, direct)
        hub = await measure("hub", targets["hub"][0], auths[0], args, direct)
        # Throughput in alternating rounds, so a burst of load from elsewhere on this shared
        # machine lands on both sides rather than on whichever ran at that moment.
        rounds: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, (url, headers) in targets.items():
                rounds[name].append(await throughput(url, headers, args.seconds, 64))
        for name, figures in (("direct", direct), ("floor", floor), ("hub", hub)):
            figures["rps"] = statistics.median(rounds[name])
        ratios = [h / f for h, f in zip(rounds["hub"], rounds["floor"], strict=True)]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)

    print(
        f"{'':8}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>11}{'added p99':>11}"
        f"{'ttfb ms':>9}{'req/s@64':>10}"
    )
    for name, f in (("direct", direct), ("floor", floor), ("hub", hub)):
        print(
            f"{name:8}{f['p50']:9.2f}{f['p99']:9.2f}{f.get('added_p50', 0):11.2f}"
            f"{f.get('added_p99', 0):11.2f}{f['ttfb']:9.2f}{f['rps']:10.0f}"
        )
    print(
        f"\nhub / floor: requests/s {hub['rps'] / floor['rps']:.2f}x, "
        f"added p50 {hub['added_p50']:.2f} ms vs {floor['added_p50']:.2f} ms, "
        f"ttfb {hub['ttfb'] / floor['ttfb']:.2f}x"
    )
    print("hub / floor requests/s by round: " + ", ".join(f"{r:.2f}x" for r in ratios))
    print("targets: requests/s >= 0.6x the floor, added p50 <= 1.5 ms")


if __name__ == "__main__":
    asyncio.run(main())
