"""The SDK's side of ``/v1/stream``: the SSE parser (property-tested), applying events, keep-alives,
an endpoint the server does not have, and the guard against a slower poll undoing a newer event."""

from __future__ import annotations

import json
import logging
import random
import threading
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from banditflags._config import ConfigSnapshot, parse_config
from banditflags._sse import SseEvent, encode_event, parse_sse
from banditflags._sync import ConfigSync

# -- the parser ---------------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"), max_size=40)
_name = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=10)
_event = st.builds(
    SseEvent,
    type=_name.filter(lambda s: s not in ("comment", "message")) | st.just("message"),
    data=st.lists(_text, min_size=1, max_size=4).map("\n".join),
    id=st.none() | _text.map(str.strip).filter(bool),
)
_comment = st.builds(SseEvent, type=st.just("comment"), data=_text.map(str.strip), id=st.none())


@given(st.lists(_event | _comment, max_size=8))
def test_parse_is_the_inverse_of_encode(events: list[SseEvent]) -> None:
    wire = "".join(encode_event(e) for e in events)
    assert list(parse_sse(wire.split("\n"))) == events


@given(st.lists(_text, max_size=20))
def test_parser_never_raises_on_arbitrary_lines(lines: list[str]) -> None:
    for event in parse_sse(lines):
        assert isinstance(event.data, str)


def test_parser_edge_cases() -> None:
    lines = [
        "data:no-space",
        "data:  two spaces",
        "",
        "event: x",
        "",
        "id: 9",
        "data",
        "",
        "retry: 5",
        "bogus",
    ]
    got = list(parse_sse(lines))
    # No data, no event (the second block); a bare "data" line is an empty data line.
    assert got == [SseEvent("message", "no-space\n two spaces"), SseEvent("message", "", "9")]
    assert list(parse_sse(["data: unterminated"])) == []  # an event needs its blank line


# -- ConfigSync and the stream ------------------------------------------------------------------------


def config(revision: int, state: str = "running") -> dict[str, Any]:
    return {
        "schema": 1,
        "revision": revision,
        "flags": [
            {
                "key": "btn",
                "salt": "s",
                "state": state,
                "exploration": 1.0,
                "version": 1,
                "variants": [{"key": "a", "value": "A"}, {"key": "b", "value": "B"}],
                "control": "a",
                "weights": [0.5, 0.5],
                "table": [[0, 5000], [1, 5000]],
                "objective": {"reward": "binary", "unit": "decision"},
            }
        ],
    }


def event(revision: int, state: str = "running") -> str:
    return encode_event(SseEvent("config", json.dumps(config(revision, state)), str(revision)))


class Recorder:
    def __init__(self) -> None:
        self.published: list[ConfigSnapshot] = []
        self.confirmed = 0

    def sync(self, handler: Any) -> tuple[ConfigSync, httpx.Client]:
        sync = ConfigSync(
            "http://bf.test/v1/config",
            "bf_sdk_test",
            1.0,
            self.published.append,
            self.confirm,
            logging.getLogger("test"),
            random.Random(1),
            stream_url="http://bf.test/v1/stream",
        )
        return sync, httpx.Client(transport=httpx.MockTransport(handler))

    def confirm(self) -> None:
        self.confirmed += 1


class NeverStop:
    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float | None = None) -> bool:
        return False


def test_stream_events_are_applied_and_keep_alives_confirm() -> None:
    body = ": up to date\n\n" + event(3) + ": keep-alive\n\n" + event(4, "killed")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    rec = Recorder()
    sync, http = rec.sync(handler)
    assert sync._stream_once(http, NeverStop(), 1.0) is False
    assert [s.revision for s in rec.published] == [3, 4]
    assert rec.published[-1].flags["btn"].killed
    assert rec.confirmed == 2 and sync.stream_events == 2 and sync.etag == '"4"'
    assert sync.stream_connects == 1 and sync.stream_connected  # the caller clears it when the read ends
    assert seen[0].headers["accept"] == "text/event-stream" and "last-event-id" not in seen[0].headers
    sync.stream_connected = False
    sync._stream_once(http, NeverStop(), 1.0)
    assert seen[1].headers["last-event-id"] == "4"  # resumes: the server skips an unchanged config


def test_a_bad_event_keeps_the_last_good_config() -> None:
    body = (
        event(3) + "event: config\ndata: {not json\n\n" + encode_event(SseEvent("config", '{"schema": 99}'))
    )
    rec = Recorder()
    sync, http = rec.sync(lambda r: httpx.Response(200, text=body))
    sync._stream_once(http, NeverStop(), 1.0)
    assert [s.revision for s in rec.published] == [3] and sync.bad_payloads == 2


def test_missing_endpoint_is_reported_as_unsupported() -> None:
    rec = Recorder()
    for status, unsupported in ((404, True), (405, True), (503, False), (401, False)):
        sync, http = rec.sync(lambda r, status=status: httpx.Response(status))
        assert sync._stream_once(http, NeverStop(), 1.0) is unsupported
        assert (
            not sync.stream_connected and sync.stream_errors == 1 and str(status) in (sync.last_error or "")
        )


def test_a_slow_poll_never_undoes_a_newer_stream_event() -> None:
    """The poll was sent before the stream delivered revision 5, and answers with revision 4 after it."""
    rec = Recorder()
    entered, release = threading.Event(), threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/config":
            entered.set()
            release.wait(5.0)
            return httpx.Response(200, json=config(4), headers={"ETag": '"4"'})
        return httpx.Response(200, text=event(5, "killed"))

    sync, http = rec.sync(handler)
    poll = threading.Thread(target=lambda: sync.fetch(http, 5.0))
    poll.start()
    assert entered.wait(5.0)
    sync._stream_once(http, NeverStop(), 1.0)  # delivers revision 5 while the poll is in flight
    release.set()
    poll.join(5.0)
    assert [s.revision for s in rec.published] == [5]
    assert sync.revision == 5 and sync.etag == '"5"'
    # A poll sent after that publish is the server's word, even with a lower revision (a new database).
    lower = parse_config(config(2))
    assert sync._accept(lower, sync._generation) and sync.revision == 2
