"""Exceptions raised by banditflags.

The hierarchy is deliberately small, like httpx's::

    BanditflagsError          base class of everything this package raises
    └── ConfigError           a config payload (server answer or bootstrap) failed validation

Only constructors and explicit validation helpers (``parse_config``) raise. The decision and
recording methods of :class:`banditflags.Client` (``variant``, ``decide``, ``track``, ``flush``,
``close``) never raise into the caller; problems there are reported through the returned
``Decision``'s reason, a ``False`` return value, ``Client.stats()`` and the logger.

>>> from banditflags import BanditflagsError, ConfigError
>>> issubclass(ConfigError, BanditflagsError)
True
"""

from __future__ import annotations

__all__ = ["BanditflagsError", "ConfigError"]


class BanditflagsError(Exception):
    """Base class of every exception raised by banditflags."""


class ConfigError(BanditflagsError):
    """A config payload failed validation.

    ``path`` names the offending field the way docs/protocol.md does (``flags[2].table``), or is
    ``""`` when the whole payload is wrong.

    >>> err = ConfigError("flags[0].salt", "must be a string")
    >>> str(err), err.path
    ('flags[0].salt: must be a string', 'flags[0].salt')
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)
