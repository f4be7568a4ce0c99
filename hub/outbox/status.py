"""How far behind each sink is: for /metrics (the dispatcher) and the dashboard."""

from __future__ import annotations

from hub.store.outbox import OutboxStore


async def sink_lag(
    outbox: OutboxStore, sinks: list[str], now: float
) -> dict[str, tuple[int, float]]:
    """Per sink: rows not yet delivered to it, and the age in seconds of the oldest.
    Rows not yet enrolled wait for every sink."""
    per_sink, (waiting, waiting_oldest) = await outbox.lag()
    lag: dict[str, tuple[int, float]] = {}
    for name in sinks:
        pending, oldest = per_sink.get(name, (0, None))
        stamps = [t for t in (oldest, waiting_oldest) if t is not None]
        lag[name] = (pending + waiting, max(0.0, now - min(stamps)) if stamps else 0.0)
    return lag


async def status_line(outbox: OutboxStore, sinks: list[str], now: float) -> str:
    """One sentence for the dashboard: each sink's backlog."""
    parts = []
    for name, (pending, age) in (await sink_lag(outbox, sinks, now)).items():
        behind = f", the oldest {int(age)} s old" if pending else ""
        parts.append(f"{name}: {pending} waiting{behind}")
    return "Meter events out: " + "; ".join(parts) + "."
