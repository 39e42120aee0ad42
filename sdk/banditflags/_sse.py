"""A small server-sent events parser (the WHATWG ``text/event-stream`` format), for ``/v1/stream``.

Comments (lines starting with ``:``) are reported too, as events of type ``comment``: the server's
keep-alive comments tell the client that the connection and the config are still current.

Lines end at CRLF, CR or LF only (:func:`split_lines`). Not at the other line breaks that
``str.splitlines`` and httpx's ``Response.iter_lines`` also split at (U+2028, U+2029, U+0085, ...):
the server sends compact JSON with ``ensure_ascii=False``, so a flag value may carry them raw inside a
``data:`` line, and splitting there made the client reject every config event of such a config while
its stream stayed up (polling pauses then), so not even the kill switch arrived.

Why not httpx-sse (evaluated for issue 10 against 0.4.3, the current release): it is light (no
dependency of its own, +96 KiB installed next to the SDK's 7.8 MiB with its dependencies, +0.65 ms of
an 85 ms ``import banditflags``, about what this module's own import costs) and its line splitting
follows the format, but it cannot tell us about comments: its decoder drops them, so the
``: up to date`` and ``: keep-alive`` lines that confirm the config would never reach the client, and
every decision would turn ``stale`` after ``stale_after`` seconds of a quiet, healthy stream (polling
pauses while the stream is up). Comments after an event with an ``id`` do show up, as an empty
``message`` event (its issue #35, a deviation from the format; fix PRs #36 and #46 open, the first
since 2025-09): relying on that would break when it is fixed, and the first ``: up to date`` comes
before any id. It would also need ``>=0.4.3`` (0.4.0 and 0.4.1 split lines with httpx's ``iter_lines``,
the bug above; 0.4.2 was slow). What we need is the 90 lines below; what it would add is a dependency
whose handling of comments we would have to work around.

>>> lines = ["retry: 2000", "", "event: config", "id: 7", 'data: {"revision":7}', "", ": keep-alive", ""]
>>> [(e.type, e.data, e.id) for e in parse_sse(lines)]
[('config', '{"revision":7}', '7'), ('comment', 'keep-alive', None)]
>>> list(split_lines(["data: a\\u2028b\\r", "\\n", "\\r", ": x\\n", "data: cut"]))
['data: a\\u2028b', '', ': x', 'data: cut']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["SseEvent", "encode_event", "parse_sse", "split_lines"]

_split = re.compile("\r\n|\r|\n").split


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: ``type`` (``message`` by default, ``comment`` for comments), ``data``
    (the ``data:`` lines joined by newlines), ``id`` (the last ``id:`` seen, if any in this event)."""

    type: str
    data: str
    id: str | None = None


def split_lines(chunks: Iterable[str]) -> Iterator[str]:
    """The lines (without their line endings) of a stream given as decoded text chunks of any size,
    e.g. ``response.iter_text()``; a last line that the stream cut short comes last."""
    pending: list[str] = []  # the start of a line that has not ended yet
    after_cr = False  # the last chunk ended with CR: an LF that starts the next one belongs to it
    for chunk in chunks:
        if not chunk:
            continue
        if after_cr and chunk[0] == "\n":
            chunk = chunk[1:]
        after_cr = chunk.endswith("\r")
        if not chunk:
            continue
        parts = _split(chunk)
        if len(parts) == 1:
            pending.append(chunk)
            continue
        if pending:
            pending.append(parts[0])
            parts[0] = "".join(pending)
        tail = parts.pop()
        pending = [tail] if tail else []
        yield from parts
    if pending:
        yield "".join(pending)


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Events from the lines of a stream (without their line endings), as they complete.

    An event is dispatched at a blank line if it had at least one ``data:`` line; ``retry:`` and
    unknown fields are ignored, as the format says.
    """
    kind = ""
    data: list[str] = []
    ident: str | None = None
    for line in lines:
        if not line:
            if data:
                yield SseEvent(kind or "message", "\n".join(data), ident)
            kind, data, ident = "", [], None
            continue
        if line.startswith(":"):
            yield SseEvent("comment", line[1:].strip())
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            kind = value
        elif name == "id" and "\0" not in value:
            ident = value


def encode_event(event: SseEvent) -> str:
    """The wire form of an event (the inverse of :func:`parse_sse`, used by tests and tools).

    >>> encode_event(SseEvent("config", "a\\nb", "3"))
    'event: config\\nid: 3\\ndata: a\\ndata: b\\n\\n'
    """
    if event.type == "comment":
        return f": {event.data}\n\n"
    head = "" if event.type == "message" else f"event: {event.type}\n"
    if event.id is not None:
        head += f"id: {event.id}\n"
    return head + "".join(f"data: {part}\n" for part in event.data.split("\n")) + "\n"
