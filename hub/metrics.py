"""Prometheus metrics (`GET /metrics`) and one structured log line per call.

A few counters and histograms written in the text exposition format. One process counts in
memory. Several worker processes of one server (a metrics directory is set) also write
their figures to files there, and a scrape, whichever worker answers it, sums them all
(hub/metrics_shared.py): the figures of the whole server.
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

from hub.metrics_shared import PLAIN, SUM, Cell, Directory, Labels, WorkerFile
from middleware.call import Call
from middleware.money import credits_text
from middleware.ports import SETTLE_REFUSED

call_log = logging.getLogger("aigne_hub.calls")

# Seconds; model calls run from milliseconds (embeddings) to minutes (long streams).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

CREDITS = "aigne_hub_credits_total"
IN_FLIGHT = "aigne_hub_calls_in_flight"
# Set, not added to: the outbox's lag, reported by the dispatcher holding the lease (the
# others report 0, so several workers' files still sum to the one figure).
GAUGES = {"aigne_hub_outbox_pending", "aigne_hub_outbox_oldest_pending_seconds"}
Counters = Mapping[str, Mapping[Labels, int]]


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> int:
        """Count the value; returns the index of its bucket."""
        bucket = bisect_left(BUCKETS, value)
        self.counts[bucket] += 1
        self.total += value
        return bucket


Histograms = Mapping[str, Mapping[Labels, _Histogram]]


# The model label of calls to models the hub neither prices nor lists.
OTHER_MODEL = "other"


class Metrics:
    """Implements middleware.ports.CallObserver.

    A model name is a label only if `known_model` says the hub offers it: callers choose
    the names they send, and every label value is a series kept for the process's life, so
    made-up names (any `provider/...` is routed) are counted together under OTHER_MODEL.
    """

    def __init__(
        self,
        log_prompts: bool = False,
        known_model: Callable[[str], bool] | None = None,
        shared_dir: str | None = None,
    ) -> None:
        self.log_prompts = log_prompts
        self.known_model = known_model
        self.shared_dir = shared_dir
        self.in_flight = 0
        # Integers (calls, tokens, credit units): sums stay exact however long the server runs.
        self.counters: dict[str, defaultdict[Labels, int]] = defaultdict(lambda: defaultdict(int))
        self.histograms: dict[str, dict[Labels, _Histogram]] = defaultdict(dict)
        self._file: WorkerFile | None = None
        self._workers: Directory | None = None

    def start(self) -> None:
        """In the worker process, before it serves: its file in the shared directory."""
        if self.shared_dir is not None and self._file is None:
            self._file = WorkerFile(self.shared_dir)
            self._workers = Directory(self.shared_dir)
            self._file.set((IN_FLIGHT, (), PLAIN), self.in_flight)

    def stop(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def opened(self, call: Call) -> None:
        self.in_flight += 1
        if self._file is not None:
            self._file.set((IN_FLIGHT, (), PLAIN), self.in_flight)

    def settled(self, call: Call) -> None:
        self.in_flight -= 1
        if self._file is not None:
            self._file.set((IN_FLIGHT, (), PLAIN), self.in_flight)
        provider = call.provider or "none"
        known = self.known_model is None or self.known_model(call.model)
        model = call.model if known else OTHER_MODEL
        base = (("provider", provider), ("model", model), ("type", call.call_type))
        self._count("aigne_hub_calls_total", (*base, ("status", call.status)))
        usage = call.usage
        if usage is not None:
            self._count("aigne_hub_tokens_total", (*base, ("kind", "input")), usage.input_tokens)
            self._count("aigne_hub_tokens_total", (*base, ("kind", "output")), usage.output_tokens)
        if call.charge:
            # Summed in integer units and shown exactly, like every other sum of money here.
            self._count(CREDITS, base, call.charge)
        if call.error_code == SETTLE_REFUSED:
            # A call answered but not billed (its record could not be written): alert on it.
            self._count("aigne_hub_settle_refused_total", ())
        if call.error_code and call.error_code.startswith("upstream_"):
            labels = (("provider", provider), ("code", call.error_code))
            self._count("aigne_hub_upstream_errors_total", labels)
        self._observe(
            "aigne_hub_call_duration_seconds", base[:1] + base[2:], call.duration_ms / 1000
        )
        if call.ttfb_ms is not None:
            self._observe("aigne_hub_ttfb_seconds", base[:1] + base[2:], call.ttfb_ms / 1000)
        if call_log.isEnabledFor(logging.INFO):
            line = _line(call)
            if self.log_prompts:
                line["prompt"] = _prompt(call)
            call_log.info(json.dumps(line, separators=(",", ":"), default=str))

    def upstream_retried(self) -> None:
        """A request sent again on a new connection: the pooled one it went out on had been
        closed by the provider (a keep-alive timeout) before any answer arrived."""
        self._count("aigne_hub_upstream_stale_retries_total", ())

    def rate_limited(self, scope: str, limit: str) -> None:
        """A call refused by a rate limit (scope: key, account, app, model)."""
        self._count("aigne_hub_rate_limited_total", (("scope", scope), ("limit", limit)))

    def rate_limiter_failed(self) -> None:
        """The shared rate limiter (Redis) could not be asked: calls failed open or closed."""
        self._count("aigne_hub_rate_limiter_errors_total", ())

    def outbox_delivered(self, sink: str, count: int) -> None:
        """Deliveries a sink acknowledged (hub.outbox)."""
        self._count("aigne_hub_outbox_deliveries_total", (("sink", sink),), count)

    def outbox_failed(self, sink: str, count: int) -> None:
        """Deliveries that failed and wait for a retry."""
        self._count("aigne_hub_outbox_failures_total", (("sink", sink),), count)

    def outbox_lag(self, sink: str, pending: int, oldest_seconds: float) -> None:
        """Rows not yet delivered to a sink, and the age of the oldest, in whole seconds."""
        labels: Labels = (("sink", sink),)
        for name, value in (
            ("aigne_hub_outbox_pending", pending),
            ("aigne_hub_outbox_oldest_pending_seconds", int(oldest_seconds)),
        ):
            self.counters[name][labels] = 0
            self._count(name, labels, value)

    def _count(self, name: str, labels: Labels, amount: int = 1) -> None:
        series = self.counters[name]
        series[labels] += amount
        if self._file is not None:
            self._file.set((name, labels, PLAIN), series[labels])

    def _observe(self, name: str, labels: Labels, value: float) -> None:
        histogram = self.histograms[name].get(labels)
        if histogram is None:
            histogram = self.histograms[name][labels] = _Histogram()
        bucket = histogram.observe(value)
        if self._file is not None:
            self._file.set((name, labels, bucket), histogram.counts[bucket])
            self._file.set((name, labels, SUM), histogram.total)

    def render(self) -> str:
        """The Prometheus text exposition format: this process's figures, or with a shared
        directory, the server's (every worker's, summed)."""
        if self._workers is None:
            return _render(self.in_flight, self.counters, self.histograms)
        return _render(*_summed(self._workers.cells()))

    def server_in_flight(self) -> int:
        """Calls in flight in the whole server (every live worker)."""
        if self._workers is None:
            return self.in_flight
        return _summed(self._workers.cells())[0]


def _summed(cells: Iterable[tuple[Cell, float, bool]]) -> tuple[int, Counters, Histograms]:
    in_flight = 0
    counters: defaultdict[str, defaultdict[Labels, int]] = defaultdict(lambda: defaultdict(int))
    histograms: defaultdict[str, dict[Labels, _Histogram]] = defaultdict(dict)
    for (name, labels, part), value, alive in cells:
        if name == IN_FLIGHT:
            in_flight += int(value) if alive else 0
        elif part == PLAIN:
            counters[name][labels] += int(value)
        else:
            histogram = histograms[name].get(labels)
            if histogram is None:
                histogram = histograms[name][labels] = _Histogram()
            if part == SUM:
                histogram.total += value
            else:
                histogram.counts[part] += int(value)
    return in_flight, counters, histograms


def _render(in_flight: int, counters: Counters, histograms: Histograms) -> str:
    out = [f"# TYPE {IN_FLIGHT} gauge", f"{IN_FLIGHT} {in_flight}"]
    for name, series in sorted(counters.items()):
        out.append(f"# TYPE {name} {'gauge' if name in GAUGES else 'counter'}")
        for labels, value in series.items():
            shown = credits_text(value) if name == CREDITS else str(value)
            out.append(f"{name}{_labels(labels)} {shown}")
    for name, by_labels in sorted(histograms.items()):
        out.append(f"# TYPE {name} histogram")
        for labels, histogram in by_labels.items():
            running = 0
            for bound, count in zip((*BUCKETS, float("inf")), histogram.counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(f"{name}_bucket{_labels((*labels, ('le', le)))} {running}")
            out.append(f"{name}_sum{_labels(labels)} {_number(histogram.total)}")
            out.append(f"{name}_count{_labels(labels)} {running}")
    return "\n".join(out) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _line(call: Call) -> dict[str, object]:
    """What the call log says of a call: no prompt, no answer, no key."""
    usage = call.usage
    return {
        "call": call.id,
        "request": call.request_id,
        "user": call.identity.user_did,
        "app": call.app_did,
        "key": call.identity.key_id,
        "provider": call.provider,
        "model": call.model,
        "type": call.call_type,
        "stream": call.stream,
        "status": call.status,
        "http": call.http_status,
        "error": call.error_code,
        "input_tokens": usage.input_tokens if usage else 0,
        "output_tokens": usage.output_tokens if usage else 0,
        "cached_tokens": usage.cached_tokens if usage else 0,
        "cache_write_tokens": usage.cache_write_tokens if usage else 0,
        "estimated": call.usage_estimated,
        "credits": credits_text(call.charge or 0),
        "duration_ms": call.duration_ms,
        "ttfb_ms": call.ttfb_ms,
        "attempts": call.attempts,
    }


def _prompt(call: Call) -> object:
    """What the caller asked, in the request's own shape: chat messages, embedding input or
    an image prompt. Logged only when the operator turns `logging.prompts` on."""
    body = call.body
    for field in ("messages", "input", "prompt"):
        if field in body:
            return body[field]
    return None
