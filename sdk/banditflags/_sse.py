"""A small server-sent events parser (the WHATWG ``text/event-stream`` format), for ``/v1/stream``.

Comments (lines starting with ``:``) are reported too, as events of type ``comment``: the server's
keep-alive comments tell the client that the connection and the config are still current.

>>> lines = ["retry: 2000", "", "event: config", "id: 7", 'data: {"revision":7}', "", ": keep-alive", ""]
>>> [(e.type, e.data, e.id) for e in parse_sse(lines)]
[('config', '{"revision":7}', '7'), ('comment', 'keep-alive', None)]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["SseEvent", "encode_event", "parse_sse"]


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: ``type`` (``message`` by default, ``comment`` for comments), ``data``
    (the ``data:`` lines joined by newlines), ``id`` (the last ``id:`` seen, if any in this event)."""

    type: str
    data: str
    id: str | None = None


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
