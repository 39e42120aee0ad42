"""Fixtures of the store tests: an empty database on SQLite and on PostgreSQL, and a store on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from banditflags_server.settings import database_url
from banditflags_server.storage import schema as db
from banditflags_server.storage.store import Store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL, empty: a SQLite file, or the session's PostgreSQL database with no tables."""
    if request.param == "sqlite":
        return database_url(str(tmp_path / "store.db"))
    pg: str = request.getfixturevalue("pg_url")
    engine = sa.create_engine(database_url(pg))
    with engine.begin() as conn:
        db.metadata.drop_all(conn)
    engine.dispose()
    return database_url(pg)


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    """A store on ``url`` (migrated), closed after the test."""
    s = Store.open(url)
    yield s
    s.close()
