"""When each sdk key last delivered an event batch ("when SDKs last reported", in the console).

``POST /v1/events`` notes the batch in memory (:meth:`ReportTracker.note`, a dict assignment); a task
writes the notes every few seconds with one upsert per key name. Writing per batch inside the ingest
transaction would make every batch of one key wait on the same row lock (PostgreSQL), for a number
nobody needs to the millisecond.

>>> t = ReportTracker()
>>> t.note("env-sdk-1", "banditflags-python/0.1.0", now=10.0)
>>> t.note("env-sdk-1", "banditflags-python/0.1.0", now=12.0)
>>> t.pending["env-sdk-1"]
(12.0, 'banditflags-python/0.1.0', 2)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from banditflags_server.storage import schema as db
from banditflags_server.storage.schema import sdk_reports

log = logging.getLogger("banditflags_server.reports")

FLUSH_INTERVAL = 5.0


@dataclass(frozen=True)
class SdkReport:
    """One sdk key's last batch."""

    key_name: str
    last_batch_at: float
    sdk: str
    batches: int


class ReportTracker:
    """Per-process notes of event batches, flushed to ``sdk_reports``."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[float, str, int]] = {}

    def note(self, key_name: str, sdk: str, *, now: float | None = None) -> None:
        """Remember a batch from ``key_name`` (called on the event loop: no lock needed)."""
        at = time.time() if now is None else now
        _, _, count = self.pending.get(key_name, (0.0, "", 0))
        self.pending[key_name] = (at, sdk[:200], count + 1)

    def take(self) -> dict[str, tuple[float, str, int]]:
        """The notes so far, leaving none (called on the event loop, like :meth:`note`)."""
        notes, self.pending = self.pending, {}
        return notes

    def restore(self, notes: dict[str, tuple[float, str, int]]) -> None:
        """Put back notes that could not be written, merged with newer ones."""
        for name, (at, sdk, count) in notes.items():
            cur = self.pending.get(name)
            self.pending[name] = (max(at, cur[0]), cur[1], count + cur[2]) if cur else (at, sdk, count)


def write_notes(engine: Engine, notes: dict[str, tuple[float, str, int]]) -> None:
    """Upsert the notes (blocking): the latest time wins, batch counts add up."""
    if not notes:
        return
    with db.write_tx(engine) as conn:
        for name, (at, sdk, count) in sorted(notes.items()):
            done = conn.execute(
                sa.update(sdk_reports)
                .where(sdk_reports.c.key_name == name)
                .values(
                    last_batch_at=sa.case(
                        (sdk_reports.c.last_batch_at < at, at), else_=sdk_reports.c.last_batch_at
                    ),
                    sdk=sdk,
                    batches=sdk_reports.c.batches + count,
                )
            ).rowcount
            if not done:
                conn.execute(
                    sa.insert(sdk_reports).values(key_name=name, last_batch_at=at, sdk=sdk, batches=count)
                )


def read_reports(engine: Engine) -> list[SdkReport]:
    """Every sdk key name that ever delivered a batch, most recent first."""
    with db.read_tx(engine) as conn:
        rows = conn.execute(sa.select(sdk_reports).order_by(sdk_reports.c.last_batch_at.desc())).mappings()
        return [
            SdkReport(m["key_name"], float(m["last_batch_at"]), m["sdk"], int(m["batches"])) for m in rows
        ]


async def flush_loop(
    tracker: ReportTracker, engine: Engine, stop: asyncio.Event, interval: float = FLUSH_INTERVAL
) -> None:
    """Write the notes every ``interval`` seconds until ``stop``, and once more at the end."""
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        notes = tracker.take()
        try:
            await asyncio.to_thread(write_notes, engine, notes)
        except Exception as exc:
            tracker.restore(notes)
            # Two processes inserting the same new name race on the primary key: the next flush wins.
            log.debug("sdk report flush failed (kept for the next one): %s", type(exc).__name__)
