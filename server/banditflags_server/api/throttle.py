"""Throttling of repeated unknown keys, per client address (docs/security.md "Guessing keys").

An address that presented ``limit`` unknown keys within ``window`` seconds is throttled until the window
ends: 429 with ``Retry-After`` for every key except the ones that address used successfully before. So an
SDK fleet behind one NAT keeps working while a bad client on the same address is refused, and a correct
guess from a throttled address is refused like a wrong one (the answer tells nothing). Both tables are
bounded (least recently used addresses go first), so a flood of addresses cannot grow memory. They live
in the event loop's thread, like the handlers that use them: no lock.

>>> t = BadKeyThrottle(limit=2, window=60.0, clock=lambda: 100.0)
>>> t.vouch("10.0.0.1", "good-key-hash")
>>> t.failed("10.0.0.1"); t.retry_after("10.0.0.1", "guess") is None
True
>>> t.failed("10.0.0.1"); t.retry_after("10.0.0.1", "guess"), t.retry_after("10.0.0.2", "guess")
(60.0, None)
>>> t.retry_after("10.0.0.1", "good-key-hash") is None
True
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

__all__ = ["KEYS_PER_ADDRESS", "MAX_ADDRESSES", "BadKeyThrottle"]

#: Addresses remembered at most, in each table (a few hundred bytes each).
MAX_ADDRESSES = 10_000
#: Keys remembered per address as used successfully from it (an SDK fleet uses one or two).
KEYS_PER_ADDRESS = 4

V = TypeVar("V")


class BadKeyThrottle:
    """Unknown keys per address in a fixed window that starts at the first one; ``limit`` 0 is off."""

    def __init__(
        self,
        limit: int = 20,
        window: float = 60.0,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self.clock = clock
        #: address -> (window start, unknown keys in it), least recently failed first.
        self.failures: OrderedDict[str, tuple[float, int]] = OrderedDict()
        #: address -> hashes of the keys used successfully from it, least recently used first.
        self.good: OrderedDict[str, list[str]] = OrderedDict()

    def retry_after(self, address: str, digest: str | None) -> float | None:
        """Seconds until ``address`` may try the key with this hash, or None if it may now."""
        entry = self.failures.get(address)
        if entry is None or self.limit <= 0:
            return None
        start, count = entry
        left = start + self.window - self.clock()
        if left <= 0:
            del self.failures[address]
            return None
        if count < self.limit or digest in self.good.get(address, ()):
            return None
        return left

    def failed(self, address: str) -> None:
        """Count an unknown key from ``address``."""
        now = self.clock()
        start, count = self.failures.pop(address, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        self.failures[address] = (start, count + 1)
        _bound(self.failures, self.max_addresses)

    def vouch(self, address: str, digest: str) -> None:
        """Remember that the key with this hash worked from ``address`` (on every accepted request: the
        usual case, an address and key already remembered, is a lookup and a move)."""
        used = self.good.get(address)
        if used is not None and digest in used:
            self.good.move_to_end(address)
            return
        used = [*(used or ())[-(KEYS_PER_ADDRESS - 1) :], digest]
        self.good.pop(address, None)
        self.good[address] = used
        _bound(self.good, self.max_addresses)


def _bound(table: OrderedDict[str, V], size: int) -> None:
    while len(table) > size:
        table.popitem(last=False)
