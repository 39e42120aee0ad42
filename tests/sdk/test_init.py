"""The public surface is small and pinned; the SDK stays light."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import banditflags
from banditflags import BanditflagsError, ClientStats, ConfigError, Decision, ErrorType, Reason


def test_public_surface_is_pinned() -> None:
    assert sorted(banditflags.__all__) == sorted(
        [
            "Client",
            "Decision",
            "Reason",
            "ErrorType",
            "ClientStats",
            "ConfigEvent",
            "BanditflagsError",
            "ConfigError",
            "__version__",
        ]
    )
    # optional submodules appear as attributes once something imported them
    submodules = {"openfeature", "serverless", "web"}
    public = {name for name in vars(banditflags) if not name.startswith("_")} - submodules
    assert public == set(banditflags.__all__) - {"__version__"}
    assert banditflags.__version__ == "0.1.0"


def test_exception_hierarchy() -> None:
    assert issubclass(BanditflagsError, Exception)
    assert issubclass(ConfigError, BanditflagsError)
    assert ConfigError("flags[0].key", "bad").path == "flags[0].key"


def test_enums_are_lower_case_strings() -> None:
    assert [r.value for r in Reason] == ["split", "disabled", "default", "stale", "cached", "error"]
    assert [e.value for e in ErrorType] == [
        "flag_not_found",
        "provider_not_ready",
        "targeting_key_missing",
        "parse_error",
        "general",
    ]
    assert Reason.SPLIT == "split" and str(ErrorType.GENERAL) == "general"


def test_records_are_frozen_and_slotted() -> None:
    d = Decision("f", "a", 1, Reason.SPLIT, 1, 0, 0.5)
    with pytest.raises(AttributeError):  # a read-only record (a tuple underneath: tests/sdk/test_models.py)
        d.variant = "b"  # type: ignore[misc]
    assert not hasattr(d, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ClientStats().batches_sent = 1


def test_sdk_imports_nothing_heavy() -> None:
    code = (
        "import sys, banditflags; "
        "bad = [m for m in ('numpy', 'starlette', 'sqlalchemy', 'banditflags_server', 'uvicorn') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
