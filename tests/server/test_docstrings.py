"""Every example in the server's docstrings runs and gives what it shows (the engine's above all: they
are how a newcomer reads the policies)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import banditflags_server

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(banditflags_server.__path__, "banditflags_server.")
    if not info.name.endswith("__main__")
)


def test_the_walk_finds_the_layers() -> None:
    assert {"banditflags_server.engine.weights", "banditflags_server.api.flags"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
