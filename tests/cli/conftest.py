"""Fixtures of the CLI tests: the ``banditflags`` command run in this process against the real server
(``server`` and ``admin`` from tests/conftest.py), returning ``(exit code, stdout, stderr)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from banditflags_server.cli import main

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def bf(server: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """``bf("segments", "list")``: the whole command line after ``banditflags``."""
    monkeypatch.setenv("BANDITFLAGS_URL", server.url)
    monkeypatch.setenv("BANDITFLAGS_ADMIN_KEY", server.admin_key)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def cli(bf: Run) -> Run:
    """``cli("show", "f")``: ``banditflags flags ...``."""
    return lambda *argv: bf("flags", *argv)


@pytest.fixture
def seg(bf: Run) -> Run:
    """``seg("list")``: ``banditflags segments ...``."""
    return lambda *argv: bf("segments", *argv)
