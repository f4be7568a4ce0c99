"""The incremental SSE splitter."""

from __future__ import annotations

import pytest

from hub.sse import EventSplitter, event_data, json_data


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_events_split_across_any_chunking_come_out_whole(step: int) -> None:
    stream = b'data: {"a":1}\n\ndata: {"b":2}\r\n\r\nevent: x\ndata: [DONE]\n\n'
    splitter = EventSplitter()
    events = []
    for i in range(0, len(stream), step):
        events += splitter.feed(stream[i : i + step])

    assert events == [b'data: {"a":1}\n\n', b'data: {"b":2}\r\n\r\n', b"event: x\ndata: [DONE]\n\n"]
    assert splitter.flush() == b""
    assert json_data(events[1]) == {"b": 2} and json_data(events[2]) is None
    assert event_data(events[2]) == b"[DONE]"


def test_an_unfinished_event_waits_for_the_rest() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b'data: {"a"') == []
    assert splitter.feed(b":1}\n\ndata: x") == [b'data: {"a":1}\n\n']
    assert splitter.flush() == b"data: x"
