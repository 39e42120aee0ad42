"""Database schema, engine set-up and numbered migrations (SQLAlchemy Core; SQLite and PostgreSQL).

JSON documents live in ``Text`` columns serialised by us, so both dialects store the same bytes.
Timestamps are ``Double`` seconds since the epoch. ``meta`` holds ``schema_version`` and the config
``revision`` counter.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

metadata = sa.MetaData()

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(8), nullable=False),  # admin | sdk
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Double, nullable=False),
)

flags = sa.Table(
    "flags",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("salt", sa.String(32), nullable=False),
    sa.Column("variants", sa.Text, nullable=False),  # JSON [{"key", "value"}]
    sa.Column("control", sa.Integer, nullable=False),
    sa.Column("objective", sa.Text, nullable=False),  # JSON, defaults filled in
    sa.Column("policy", sa.Text, nullable=False),  # JSON, the user's parameters as validated
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("exploration", sa.Double, nullable=False),
    sa.Column("baseline", sa.String(8), nullable=False),
    sa.Column("recompute_interval", sa.Double, nullable=False),
    sa.Column("bandit_weights", sa.Text, nullable=False),  # JSON [float]
    sa.Column("version", sa.Integer, nullable=False),  # current allocation version
    # Bumped on every write of the row: writers compare-and-set on it, so a concurrent change wins cleanly.
    sa.Column("row_version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("recomputed_at", sa.Double, nullable=True),
    # Issue 3 (migration 2): guardrail declarations, and the arms they (or the operator) disabled.
    sa.Column("guardrails", sa.Text, nullable=False, server_default="[]"),  # JSON [{metric, ...}]
    sa.Column("arm_state", sa.Text, nullable=False, server_default="{}"),  # JSON {disabled, exempt}
    # Issue 12 (migration 5): targeting as validated, and each bandit rule's current allocation
    # ({rule id: {version, created_at, weights, bandit_weights, table_rle, reason, moved}}).
    sa.Column("targets", sa.Text, nullable=False, server_default="[]"),
    sa.Column("rules", sa.Text, nullable=False, server_default="[]"),
    sa.Column("rule_allocations", sa.Text, nullable=False, server_default="{}"),
)

allocations = sa.Table(
    "allocations",
    metadata,
    sa.Column("flag", sa.String(64), sa.ForeignKey("flags.key", ondelete="CASCADE"), primary_key=True),
    # The primary key makes a second table for one version impossible: a concurrent writer loses.
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("weights", sa.Text, nullable=False),  # JSON served weights = table counts / 10000
    sa.Column("bandit_weights", sa.Text, nullable=False),
    sa.Column("table_rle", sa.Text, nullable=False),  # JSON [[arm, run], ...]
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("moved", sa.Integer, nullable=False),
)

arm_stats = sa.Table(
    "arm_stats",
    metadata,
    sa.Column("flag", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("arm", sa.Integer, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),  # exposures
    sa.Column("r", sa.BigInteger, nullable=False),  # reward events
    sa.Column("s", sa.Double, nullable=False),  # sum of rewards
    sa.Column("ss", sa.Double, nullable=False),  # sum of squared rewards
    sa.ForeignKeyConstraint(
        ["flag", "version"], ["allocations.flag", "allocations.version"], ondelete="CASCADE"
    ),
)

# Rewards of guardrail metrics (issue 3): like arm_stats' reward columns, per metric. Exposures are in
# arm_stats (a decision without a metric value counts as 0).
metric_stats = sa.Table(
    "metric_stats",
    metadata,
    sa.Column("flag", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("arm", sa.Integer, primary_key=True),
    sa.Column("metric", sa.String(64), primary_key=True),
    sa.Column("r", sa.BigInteger, nullable=False),
    sa.Column("s", sa.Double, nullable=False),
    sa.Column("ss", sa.Double, nullable=False),
    sa.ForeignKeyConstraint(
        ["flag", "version"], ["allocations.flag", "allocations.version"], ondelete="CASCADE"
    ),
)

#: Every allocation version of each bandit rule (issue 12): the flag's ``allocations`` per rule.
rule_allocations = sa.Table(
    "rule_allocations",
    metadata,
    sa.Column("flag", sa.String(64), sa.ForeignKey("flags.key", ondelete="CASCADE"), primary_key=True),
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("weights", sa.Text, nullable=False),
    sa.Column("bandit_weights", sa.Text, nullable=False),
    sa.Column("table_rle", sa.Text, nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("moved", sa.Integer, nullable=False),
)

#: Arm stats of rows served by a rule or a target (issue 12): ``arm_stats`` holds rule "" (the flag's
#: default allocation, every row counted before rules existed); this table every other (flag, rule,
#: version, arm), ``rule`` being a rule id or "target". ``version`` is a bandit rule's own version, the
#: flag's otherwise; no foreign key: a row may name a rule deleted since (kept for reporting).
rule_stats = sa.Table(
    "rule_stats",
    metadata,
    sa.Column("flag", sa.String(64), primary_key=True),
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("arm", sa.Integer, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("r", sa.BigInteger, nullable=False),
    sa.Column("s", sa.Double, nullable=False),
    sa.Column("ss", sa.Double, nullable=False),
)

#: Reusable segments (issue 12): clauses and unit ids as validated, JSON.
segments = sa.Table(
    "segments",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("clauses", sa.Text, nullable=False),
    sa.Column("included", sa.Text, nullable=False),
    sa.Column("excluded", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("received_at", sa.Double, nullable=False),
)

#: Conversions already credited (issue 11, migration 4): a binary objective counts at most one conversion
#: per decision id on an arm (``did``: per decision for unit ``decision``, a keyed hash of the unit for
#: unit ``user``) until ``expires_at`` (the first credit + the flag's credit window). The ingest path
#: checks and inserts in the batch's transaction; the recompute loop prunes expired rows. No foreign
#: key: ``delete_flag`` deletes a flag's rows, and the ingest path skips the lookup a key would cost.
conversions = sa.Table(
    "conversions",
    metadata,
    # Key order (flag, did, arm): one lookup per flag finds a batch's ids on every arm. The index on
    # expires_at lets the prune go in chunks (it costs the ingest ~2.5 µs an id, measured).
    sa.Column("flag", sa.String(64), primary_key=True),
    sa.Column("did", sa.String(16), primary_key=True),
    sa.Column("arm", sa.Integer, primary_key=True),
    sa.Column("expires_at", sa.Double, nullable=False, index=True),
)

#: Every operator change of a flag or its controls (issue 5): who (the key's *name*, never the key),
#: when, before and after (JSON of the changed fields), an optional reason. No foreign key: the trail
#: outlives a deleted flag.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("flag", sa.String(64), nullable=False, index=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("before", sa.Text, nullable=True),  # JSON object or null
    sa.Column("after", sa.Text, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    # Issue 12 (migration 5): what ``flag`` names, a flag or a segment.
    sa.Column("kind", sa.String(8), nullable=False, server_default="flag"),
)

#: Console sessions. ``sid_sha256`` is the sha256 of the cookie value; ``key_sha256`` the admin key
#: that logged in (a rotated or deleted key ends its sessions); ``csrf`` the form token.
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("sid_sha256", sa.String(64), primary_key=True),
    sa.Column("key_sha256", sa.String(64), nullable=False),
    sa.Column("key_name", sa.String(64), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
)

#: When each sdk key (by name) last delivered an event batch, written every few seconds per process.
sdk_reports = sa.Table(
    "sdk_reports",
    metadata,
    sa.Column("key_name", sa.String(64), primary_key=True),
    sa.Column("last_batch_at", sa.Double, nullable=False),
    sa.Column("sdk", sa.String(200), nullable=False),
    sa.Column("batches", sa.BigInteger, nullable=False),
)


def _migration_1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[api_keys, flags, allocations, arm_stats, batches])
    conn.execute(sa.insert(meta).values(key="revision", value=0))


def _migration_2(conn: Connection) -> None:
    metadata.create_all(conn, tables=[audit_log, console_sessions, sdk_reports])


def _migration_3(conn: Connection) -> None:
    """Guardrails: two flag columns and the metric_stats table (issue 3)."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("flags")}
    for name, default in (("guardrails", "[]"), ("arm_state", "{}")):
        if name not in have:  # a new database got them from migration 1's create_all
            conn.execute(sa.text(f"ALTER TABLE flags ADD COLUMN {name} TEXT NOT NULL DEFAULT '{default}'"))
    metadata.create_all(conn, tables=[metric_stats])


def _migration_4(conn: Connection) -> None:
    """De-duplicated conversions: the conversions table (issue 11)."""
    metadata.create_all(conn, tables=[conversions])


def _add_columns(conn: Connection, table: str, columns: tuple[tuple[str, str, str], ...]) -> None:
    """Add text columns with a default, unless a new database got them from an earlier create_all."""
    have = {c["name"] for c in sa.inspect(conn).get_columns(table)}
    for name, kind, default in columns:
        if name not in have:
            conn.execute(
                sa.text(f"ALTER TABLE {table} ADD COLUMN {name} {kind} NOT NULL DEFAULT '{default}'")
            )


def _migration_5(conn: Connection) -> None:
    """Targeting and segment bandits (issue 12): the flag's targets, rules and rule allocations, the
    audit log's kind, segments, rule allocations and rule stats. Existing stats stay in arm_stats,
    which is rule "" (the default allocation)."""
    _add_columns(
        conn,
        "flags",
        (("targets", "TEXT", "[]"), ("rules", "TEXT", "[]"), ("rule_allocations", "TEXT", "{}")),
    )
    _add_columns(conn, "audit_log", (("kind", "VARCHAR(8)", "flag"),))
    metadata.create_all(conn, tables=[rule_allocations, rule_stats, segments])


#: Numbered migrations: index i brings the schema from version i to i + 1. Append only.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _migration_1, _migration_2, _migration_3, _migration_4, _migration_5,
]  # fmt: skip
SCHEMA_VERSION = len(MIGRATIONS)


def create_engine(url: str) -> Engine:
    """An engine for ``url`` with the pragmas and pooling this server needs."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _setup_sqlite(engine)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _wal(cur: Any) -> None:
    """Put the database in WAL mode (kept in the file: a no-op once done). Switching needs the file to
    itself, and SQLite answers "database is locked" at once, without waiting for the busy timeout, when
    several processes or threads open a new file together (seen in 1 of 10 runs of four threads
    migrating one new file): retry for up to ~5 s."""
    for attempt in range(250):
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 249:
                raise
            time.sleep(0.02)


def _setup_sqlite(engine: Engine) -> None:
    """WAL, durable commits, a busy timeout, foreign keys; write transactions BEGIN IMMEDIATE.

    pysqlite's own transaction handling is switched off so that we can take the write lock at BEGIN:
    a deferred transaction that reads and then writes can fail at once with SQLITE_BUSY under concurrency.
    """

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        _wal(cur)
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("bf_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def dialect_insert(conn: Connection) -> Callable[[sa.Table], Any]:
    """The dialect's ``insert`` (with ``on_conflict_do_nothing`` / ``_do_update``) for ``conn``."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on any exception."""
    with engine.connect() as raw:
        conn = raw.execution_options(bf_write=True)
        with conn.begin():
            yield conn


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A read transaction (on SQLite a consistent WAL snapshot)."""
    with engine.connect() as conn, conn.begin():
        yield conn


# PostgreSQL advisory lock ids (one per kind of start-up write that replicas must take in turn).
MIGRATION_LOCK = 7346021
KEYS_LOCK = 7346022


def serialize(conn: Connection, lock: int) -> None:
    """Make this write transaction wait for every other one that takes ``lock``, on any replica.

    On PostgreSQL an advisory transaction lock (released at commit or rollback); on SQLite a write
    transaction already holds the database's single write lock (``BEGIN IMMEDIATE``).
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": lock})


def migrate(engine: Engine) -> int:
    """Create or upgrade the schema to :data:`SCHEMA_VERSION`; idempotent and safe to run concurrently.

    Returns the schema version found before migrating (0 for a new database).
    """
    with write_tx(engine) as conn:
        serialize(conn, MIGRATION_LOCK)  # replicas starting together migrate one after the other
        metadata.create_all(conn, tables=[meta])
        row = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {found} is newer than this server's {SCHEMA_VERSION}"
            )
        for index in range(found, SCHEMA_VERSION):
            MIGRATIONS[index](conn)
        if row is None:
            conn.execute(sa.insert(meta).values(key="schema_version", value=SCHEMA_VERSION))
        elif found != SCHEMA_VERSION:
            conn.execute(sa.update(meta).where(meta.c.key == "schema_version").values(value=SCHEMA_VERSION))
        return found
