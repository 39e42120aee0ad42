"""Server settings: CLI options over environment variables over defaults.

``Settings`` is a frozen dataclass; build it with :meth:`Settings.from_env` (environment plus explicit
overrides, the CLI passes its options as overrides). Invalid values raise :class:`SettingsError`, which the
CLI turns into a usage error (exit 2).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Keys given through settings: non-empty printable ASCII without spaces (docs/protocol.md "Keys").
_KEY_RE = re.compile(r"[!-~]+")
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

DEFAULT_DB = "./banditflags.db"
MAX_BODY = 1024 * 1024


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the setting, never a key's value."""


def database_url(db: str) -> str:
    """Turn a path or SQLAlchemy-style URL into a SQLAlchemy URL.

    ``postgresql://`` and ``postgres://`` use the psycopg 3 driver; a plain path is a SQLite file.
    """
    db = db.strip()
    if not db:
        raise SettingsError("db: must not be empty")
    for prefix in ("postgresql://", "postgres://"):
        if db.startswith(prefix):
            return "postgresql+psycopg://" + db[len(prefix) :]
    if "://" in db:
        return db
    return "sqlite:///" + os.path.abspath(os.path.expanduser(db))


def _split_keys(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _check_keys(name: str, keys: tuple[str, ...]) -> None:
    for i, key in enumerate(keys):
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            # Never echo the key itself: only where it is.
            raise SettingsError(f"{name}[{i}]: must be non-empty printable ASCII without spaces")


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start; immutable once built."""

    db: str = DEFAULT_DB
    host: str = "127.0.0.1"
    port: int = 8080
    # Keys stay out of repr(), so a settings object in a log line or traceback shows none.
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    sdk_keys: tuple[str, ...] = field(default=(), repr=False)
    recompute_interval: float = 60.0
    recompute_tick: float = 1.0
    #: Seconds the recompute lease lasts unless renewed (every tick): with several replicas on one database
    #: only the holder recomputes, and another takes over within ``leader_lease + recompute_tick`` after
    #: it dies. Longer than a recompute cycle (a cycle that outlives it is discarded, not written).
    leader_lease: float = 10.0
    log_level: str = "info"
    max_body: int = MAX_BODY
    #: Run the background recompute loop (tests and tools may switch it off).
    recompute_loop: bool = True
    #: ``/v1/stream``: seconds between revision reads while streams are open, between keep-alive
    #: comments, and the most streams one process holds open (0: the stream always answers 503).
    stream_poll: float = 0.1
    #: On PostgreSQL, while this process LISTENs for the other replicas' NOTIFY of every change, the
    #: revision is read this rarely instead (a fallback: a notification is never lost silently, but a
    #: connection may be); the fast ``stream_poll`` comes back at once when the listener is down.
    listen_poll: float = 5.0
    stream_heartbeat: float = 15.0
    max_streams: int = 10_000
    #: Seconds a process trusts a key it has checked before asking the database again, so a key revoked
    #: through another process (a restart with rotated keys) stops working here too.
    key_recheck: float = 30.0
    #: Unknown keys one client address may present per minute before it gets 429 (0: no throttle).
    bad_key_limit: int = 20
    #: The bearer key ``GET /metrics`` asks for (its labels name flags and variants); None: no key.
    metrics_key: str | None = field(default=None, repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise SettingsError("port: must be an integer in 0..65535")
        if not 1.0 <= float(self.recompute_interval) <= 86400.0:
            raise SettingsError("recompute_interval: must be 1..86400 seconds")
        if not 0.01 <= float(self.recompute_tick) <= 3600.0:
            raise SettingsError("recompute_tick: must be 0.01..3600 seconds")
        if not 2 * float(self.recompute_tick) <= float(self.leader_lease) <= 3600.0:
            raise SettingsError("leader_lease: must be at least twice recompute_tick, at most 3600 seconds")
        if not 0.01 <= float(self.stream_poll) <= 60.0:
            raise SettingsError("stream_poll: must be 0.01..60 seconds")
        if not float(self.stream_poll) <= float(self.listen_poll) <= 3600.0:
            raise SettingsError("listen_poll: must be at least stream_poll, at most 3600 seconds")
        if not 0.05 <= float(self.stream_heartbeat) <= 3600.0:
            raise SettingsError("stream_heartbeat: must be 0.05..3600 seconds")
        if not isinstance(self.max_streams, int) or not 0 <= self.max_streams <= 1_000_000:
            raise SettingsError("max_streams: must be an integer in 0..1000000")
        if not 0.0 <= float(self.key_recheck) <= 86400.0:
            raise SettingsError("key_recheck: must be 0..86400 seconds")
        if not isinstance(self.bad_key_limit, int) or not 0 <= self.bad_key_limit <= 1_000_000:
            raise SettingsError("bad_key_limit: must be an integer in 0..1000000")
        if self.metrics_key is not None:
            _check_keys("metrics_key", (self.metrics_key,))
        if self.log_level not in _LOG_LEVELS:
            raise SettingsError(f"log_level: must be one of {', '.join(_LOG_LEVELS)}")
        if not self.host:
            raise SettingsError("host: must not be empty")
        _check_keys("admin_keys", self.admin_keys)
        _check_keys("sdk_keys", self.sdk_keys)
        database_url(self.db)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the database."""
        return database_url(self.db)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); non-None ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if env.get("BANDITFLAGS_DB"):
            values["db"] = env["BANDITFLAGS_DB"]
        if env.get("BANDITFLAGS_HOST"):
            values["host"] = env["BANDITFLAGS_HOST"]
        if env.get("BANDITFLAGS_PORT"):
            values["port"] = _number(env["BANDITFLAGS_PORT"], "BANDITFLAGS_PORT", int)
        if env.get("BANDITFLAGS_RECOMPUTE_INTERVAL"):
            values["recompute_interval"] = _number(
                env["BANDITFLAGS_RECOMPUTE_INTERVAL"], "BANDITFLAGS_RECOMPUTE_INTERVAL", float
            )
        for name, attr, kind in (
            ("BANDITFLAGS_STREAM_POLL", "stream_poll", float),
            ("BANDITFLAGS_LISTEN_POLL", "listen_poll", float),
            ("BANDITFLAGS_STREAM_HEARTBEAT", "stream_heartbeat", float),
            ("BANDITFLAGS_MAX_STREAMS", "max_streams", int),
            ("BANDITFLAGS_KEY_RECHECK", "key_recheck", float),
            ("BANDITFLAGS_BAD_KEY_LIMIT", "bad_key_limit", int),
            ("BANDITFLAGS_RECOMPUTE_TICK", "recompute_tick", float),
            ("BANDITFLAGS_LEADER_LEASE", "leader_lease", float),
        ):
            if env.get(name):
                values[attr] = _number(env[name], name, kind)
        if env.get("BANDITFLAGS_LOG_LEVEL"):
            values["log_level"] = env["BANDITFLAGS_LOG_LEVEL"].lower()
        values["admin_keys"] = _split_keys(env.get("BANDITFLAGS_ADMIN_KEY"))
        values["sdk_keys"] = _split_keys(env.get("BANDITFLAGS_SDK_KEY"))
        if env.get("BANDITFLAGS_METRICS_KEY", "").strip():
            values["metrics_key"] = env["BANDITFLAGS_METRICS_KEY"].strip()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _number(raw: str, name: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name}: not a number") from None
