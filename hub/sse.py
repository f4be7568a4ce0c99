"""Incremental Server-Sent Events: split a byte stream into whole events, without copying more
than the tail of an event that has not finished arriving."""

from __future__ import annotations

import json
from typing import Any


class EventSplitter:
    """Feed raw chunks; get back the complete events (each with its blank-line terminator)."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._tail + chunk if self._tail else chunk
        events: list[bytes] = []
        start = 0
        # Each separator's next position is searched for once and reused until passed: a
        # fresh search per event for a separator that is not there made big reads quadratic.
        lf = data.find(b"\n\n")
        crlf = data.find(b"\r\n\r\n") if b"\r" in data else -1
        while lf >= 0 or crlf >= 0:
            if crlf >= 0 and (lf < 0 or crlf < lf):
                end = crlf + 4
            else:
                end = lf + 2
            events.append(data[start:end])
            start = end
            if 0 <= lf < start:
                lf = data.find(b"\n\n", start)
            if 0 <= crlf < start:
                crlf = data.find(b"\r\n\r\n", start)
        self._tail = data[start:]
        return events

    def flush(self) -> bytes:
        """Whatever arrived after the last complete event."""
        tail, self._tail = self._tail, b""
        return tail


def event_data(event: bytes) -> bytes:
    """The joined `data:` lines of one event."""
    lines = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines)


def json_data(event: bytes) -> Any:
    """The event's data as JSON, or None when it is not JSON (such as `[DONE]`)."""
    data = event_data(event)
    if not data or data == b"[DONE]":
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def encode(payload: Any, event: str | None = None) -> bytes:
    """One SSE event carrying `payload` as JSON."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
