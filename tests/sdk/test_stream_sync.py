"""The SDK's side of ``/v1/stream``: the SSE parser and its line splitting (property-tested), applying
events, keep-alives, a stream cut mid-event, an endpoint the server does not have, and the guard against
a slower poll undoing a newer event."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from banditflags._config import ConfigSnapshot, parse_config
from banditflags._sse import SseEvent, encode_event, parse_sse, split_lines
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


# Line breaks other than CR and LF, which compact JSON with ensure_ascii=False carries raw.
_BREAKS = "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e"
_line = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n") | st.sampled_from(_BREAKS)
)


def _chunked(wire: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(wire)) for c in cuts})
    return [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]


@given(
    st.lists(st.tuples(_line, st.sampled_from(["\n", "\r\n", "\r"])), max_size=12),
    st.lists(st.integers(0, 400), max_size=30),
)
def test_lines_end_at_cr_lf_or_crlf_only_however_the_stream_is_chunked(
    lines: list[tuple[str, str]], cuts: list[int]
) -> None:
    wire = "".join(text + end for text, end in lines)
    whole = list(split_lines([wire]))
    assert list(split_lines(_chunked(wire, cuts))) == whole  # a CRLF split across chunks is one line end
    if not any(end == "\r" for _, end in lines):  # CR then an empty LF line would read as one CRLF
        assert whole == [text for text, _ in lines]


def test_split_lines_edge_cases() -> None:
    assert list(split_lines(["a\r", "", "\n", "\n", "b"])) == ["a", "", "b"]  # CR, LF across chunks
    assert list(split_lines(["a\u2028b\x85c\n"])) == ["a\u2028b\x85c"]
    assert list(split_lines(["da", "ta: x", "\r\n\r", "\n"])) == ["data: x", ""]
    assert list(split_lines(["cut sh", "ort"])) == ["cut short"]
    assert list(split_lines([])) == []


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


class _Cut(httpx.SyncByteStream):
    """A response body sent in small pieces (splitting multi-byte characters and CRLFs), then cut."""

    def __init__(self, body: bytes, size: int, cut_at: int | None = None) -> None:
        self.body, self.size, self.cut_at = body, size, cut_at

    def __iter__(self) -> Iterator[bytes]:
        end = len(self.body) if self.cut_at is None else self.cut_at
        for i in range(0, end, self.size):
            yield self.body[i : min(i + self.size, end)]
        if self.cut_at is not None:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def test_values_with_unicode_line_breaks_arrive_intact() -> None:
    """The server's JSON is compact with ensure_ascii=False: U+2028, U+2029 and U+0085 stay raw inside the
    data line. Splitting there (as str.splitlines and httpx's iter_lines do) rejected every such config."""
    cfg = config(3)
    cfg["flags"][0]["variants"][1]["value"] = "one\u2028two\u2029three\x85four"
    data = json.dumps(cfg, separators=(",", ":"), ensure_ascii=False)
    body = (
        ": up to date\r\n\r\n" + encode_event(SseEvent("config", data, "3")).replace("\n", "\r\n")
    ).encode()
    rec = Recorder()
    sync, http = rec.sync(lambda r: httpx.Response(200, stream=_Cut(body, 7)))
    sync._stream_once(http, NeverStop(), 1.0)
    assert [s.revision for s in rec.published] == [3] and sync.bad_payloads == 0
    assert rec.published[0].flags["btn"].values[1] == "one\u2028two\u2029three\x85four"
    assert rec.confirmed == 1


def test_a_stream_cut_mid_event_applies_what_was_complete() -> None:
    body = (event(3) + event(4, "killed")).encode()
    cut_at = len(event(3)) + len(event(4)) // 2  # inside revision 4's data line
    rec = Recorder()
    sync, http = rec.sync(lambda r: httpx.Response(200, stream=_Cut(body, 5, cut_at)))
    with pytest.raises(httpx.RemoteProtocolError):  # run_stream counts it and reconnects
        sync._stream_once(http, NeverStop(), 1.0)
    assert [s.revision for s in rec.published] == [3] and sync.bad_payloads == 0
    # Cut right after the data line, before the blank line that ends the event: still not applied.
    rec = Recorder()
    sync, http = rec.sync(lambda r: httpx.Response(200, stream=_Cut(body, 5, len(body) - 1)))
    with pytest.raises(httpx.RemoteProtocolError):
        sync._stream_once(http, NeverStop(), 1.0)
    assert [s.revision for s in rec.published] == [3]
