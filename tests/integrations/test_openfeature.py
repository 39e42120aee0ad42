"""The OpenFeature provider through the real openfeature-sdk API, against the real server; and the
shared OpenFeature conformance check."""

from __future__ import annotations

import doctest
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openfeature")

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.provider import ProviderStatus
from openfeature.track import TrackingEventDetails

import banditflags.openfeature
from banditflags import Client
from banditflags.openfeature import BanditflagsProvider

ROOT = Path(__file__).resolve().parents[2]
CONFORMANCE = [
    ROOT.parent / "shared" / "conformance" / "openfeature",  # CI: shared/ beside the clone
    Path("/work/shared/conformance/openfeature"),
]


@pytest.fixture(autouse=True)
def _clean_api() -> Iterator[None]:
    yield
    api.shutdown()


class Events:
    """Collects provider events for one domain's client."""

    def __init__(self, client: Any) -> None:
        self.got: list[tuple[ProviderEvent, EventDetails]] = []
        self.cond = threading.Condition()
        for ev in ProviderEvent:
            client.add_handler(ev, lambda d, ev=ev: self._add(ev, d))
        self.got.clear()  # a handler added while the domain's (no-op) provider is READY runs at once

    def _add(self, ev: ProviderEvent, details: EventDetails) -> None:
        with self.cond:
            self.got.append((ev, details))
            self.cond.notify_all()

    def wait_for(self, ev: ProviderEvent, timeout: float = 30.0) -> EventDetails:
        with self.cond:
            ok = self.cond.wait_for(lambda: any(e == ev for e, _ in self.got), timeout)
            assert ok, f"no {ev} within {timeout} s; got {[e for e, _ in self.got]}"
            details = next(d for e, d in self.got if e == ev)
            self.got = [(e, d) for e, d in self.got if e != ev]
            return details


def _make_flags(flags: Any) -> None:
    admin = flags.admin

    def create(key: str, values: list[Any], weights: list[float]) -> None:
        body = {
            "key": key,
            "variants": [{"key": f"v{i}", "value": v} for i, v in enumerate(values)],
            "control": "v0",
            "objective": {"reward": "binary", "direction": "maximize", "unit": "decision"},
            "policy": {"name": "fixed", "weights": weights},
        }
        assert admin.post("/v1/flags", json=body).status_code == 201

    create("checkout-button", ["#00f", "#0f0"], [0.5, 0.5])
    create("page-size", [10, 20], [0.0, 1.0])
    create("new-checkout", [False, True], [0.0, 1.0])
    create("layout", [{"cols": 1}, [1, 2]], [0.0, 1.0])
    create("discount", [1, 0.5], [1.0, 0.0])  # a JSON integer served to a float flag


def test_values_variants_reasons_metadata_and_errors(flags: Any) -> None:
    _make_flags(flags)
    server = flags.server
    provider = BanditflagsProvider(base_url=server.url, sdk_key=server.sdk_key, flush_interval=0.2)
    api.set_provider_and_wait(provider, "app")
    of = api.get_client("app")
    assert of.get_provider_status() == ProviderStatus.READY
    assert api.get_provider_metadata("app").name == "banditflags"
    ctx = EvaluationContext("user-1")

    d = of.get_string_details("checkout-button", "#000", ctx)
    assert (d.variant, d.value) in (("v0", "#00f"), ("v1", "#0f0")) and d.reason == "SPLIT"
    assert d.flag_metadata["version"] == 1 and d.flag_metadata["propensity"] == 0.5
    assert str(d.flag_metadata["token"]).startswith(f"bf2:checkout-button:1:{d.variant[1]}:")
    assert d.variant == provider.client.variant("checkout-button", "user-1")  # same bucketing as the SDK
    assert of.get_integer_value("page-size", 0, ctx) == 20
    assert of.get_boolean_value("new-checkout", False, ctx) is True
    assert of.get_object_value("layout", {}, ctx) == [1, 2]
    f = of.get_float_details("discount", 0.0, ctx)
    assert f.value == 1.0 and isinstance(f.value, float) and f.reason == "SPLIT"

    missing = of.get_string_details("no-such-flag", "dflt", ctx)
    assert (missing.value, missing.reason, missing.error_code) == ("dflt", "ERROR", ErrorCode.FLAG_NOT_FOUND)
    assert missing.variant is None
    no_key = of.get_string_details("checkout-button", "dflt", EvaluationContext())
    assert (no_key.value, no_key.error_code) == ("dflt", ErrorCode.TARGETING_KEY_MISSING)
    # JSON types are checked: true is not an integer, 10 is not a boolean, a string is not an object
    for get, key, default in (
        (of.get_integer_details, "new-checkout", 0),
        (of.get_boolean_details, "page-size", False),
        (of.get_object_details, "checkout-button", {}),
        (of.get_string_details, "page-size", "x"),
    ):
        bad = get(key, default, ctx)
        assert (bad.value, bad.reason, bad.error_code) == (default, "ERROR", ErrorCode.TYPE_MISMATCH), key
    assert provider.client.flush(10.0)
    # a type mismatch counts no exposure: only the successful resolutions (and the SDK's own variant()
    # call) reached the server
    assert sum(n for n, _ in flags.periods("new-checkout").values()) == 1
    assert sum(n for n, _ in flags.periods("page-size").values()) == 1


def test_tracking_credits_rewards(flags: Any) -> None:
    _make_flags(flags)
    server = flags.server
    provider = BanditflagsProvider(
        base_url=server.url,
        sdk_key=server.sdk_key,
        track_events={"purchase": ["checkout-button", "new-checkout"]},
    )
    api.set_provider_and_wait(provider, "app")
    of = api.get_client("app")
    ctx = EvaluationContext("user-7")
    d = of.get_string_details("checkout-button", "#000", ctx)
    arm = int(d.variant[1])
    of.track("checkout-button", ctx)  # the event name is the flag key
    of.track("purchase", ctx, TrackingEventDetails(value=1.0))  # mapped to two flags
    of.track("anything", ctx, TrackingEventDetails(attributes={"token": str(d.flag_metadata["token"])}))
    of.track(
        "anything", EvaluationContext("user-8"), TrackingEventDetails(attributes={"flag": "new-checkout"})
    )
    of.track("checkout-button", ctx, TrackingEventDetails(value=0.5))  # not a binary reward: rejected
    assert provider.client.stats().rewards_rejected == 1
    assert provider.client.flush(10.0), provider.client.stats()
    # three conversions of user-7's one decision (by key, by a mapped event, by token): counted once
    assert flags.periods("checkout-button") == {(1, arm): (1, 1)}
    assert provider.client.stats().duplicates == 2
    assert flags.periods("new-checkout") == {(1, 1): (0, 2)}


def test_events_not_ready_ready_changed_stale(flags: Any) -> None:
    _make_flags(flags)
    server = flags.server
    server.stop()
    provider = BanditflagsProvider(
        base_url=server.url, sdk_key=server.sdk_key, init_timeout=0.2, refresh_interval=0.1, stale_after=0.5
    )
    of = api.get_client("app")
    events = Events(of)
    api.set_provider(provider, "app")  # initialize runs on the SDK's thread: this returns at once
    events.wait_for(ProviderEvent.PROVIDER_ERROR)
    assert of.get_provider_status() == ProviderStatus.ERROR
    d = of.get_string_details("checkout-button", "#000", EvaluationContext("u"))
    assert (d.value, d.error_code) == ("#000", ErrorCode.PROVIDER_NOT_READY)

    server.start()  # the configuration arrives: READY
    events.wait_for(ProviderEvent.PROVIDER_READY)
    assert of.get_provider_status() == ProviderStatus.READY
    assert of.get_string_details("checkout-button", "#000", EvaluationContext("u")).reason == "SPLIT"

    flags.patch("page-size", {"state": "killed"})
    changed = events.wait_for(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    assert changed.flags_changed == ["page-size"]
    killed = of.get_integer_details("page-size", 0, EvaluationContext("u"))
    assert (killed.value, killed.variant, killed.reason) == (10, "v0", "DISABLED")

    server.stop()  # no answer for longer than stale_after: STALE, and decisions say so
    events.wait_for(ProviderEvent.PROVIDER_STALE)
    assert of.get_provider_status() == ProviderStatus.STALE
    assert of.get_string_details("checkout-button", "#000", EvaluationContext("u")).reason == "STALE"
    server.start()
    events.wait_for(ProviderEvent.PROVIDER_READY)
    assert of.get_provider_status() == ProviderStatus.READY


def test_given_client_is_not_closed_and_bootstrap_is_ready_at_once(flags: Any) -> None:
    _make_flags(flags)
    server = flags.server
    config = server.client("sdk").get("/v1/config").json()
    client = Client("http://127.0.0.1:9", server.sdk_key, bootstrap=config)  # unreachable, bootstrapped
    try:
        provider = BanditflagsProvider(client, init_timeout=30.0)
        api.set_provider_and_wait(provider, "app")  # READY from the bootstrap, without waiting 30 s
        of = api.get_client("app")
        assert of.get_provider_status() == ProviderStatus.READY
        assert of.get_integer_details("page-size", 0, EvaluationContext("u")).reason == "CACHED"
        api.shutdown()
        assert client.variant("page-size", "u") == "v1"  # still usable: the application owns it
        with pytest.raises(TypeError):
            BanditflagsProvider(client, base_url="http://x")
        with pytest.raises(TypeError):
            BanditflagsProvider()
    finally:
        client.close(0.5)


def test_docstring_examples() -> None:
    assert doctest.testmod(banditflags.openfeature, optionflags=doctest.ELLIPSIS).failed == 0


def test_openfeature_conformance_check() -> None:
    """The shared OpenFeature conformance runner (starts its own server) reports 0 failed."""
    folder = next((p for p in CONFORMANCE if (p / "run_conformance.py").is_file()), None)
    if folder is None:
        pytest.skip(f"the shared conformance check is not there (looked in {[str(p) for p in CONFORMANCE]})")
    result = subprocess.run(
        [sys.executable, str(folder / "run_conformance.py"), "--serve"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0 and last.endswith(" 0 failed"), (
        result.stdout[-3000:] + result.stderr[-2000:]
    )
    assert int(last.split()[0]) >= 70


def test_context_attributes_feed_targeting_and_the_rule_is_in_the_metadata() -> None:
    """EvaluationContext attributes are the decision's attributes (targeting_key stays the unit id);
    a rule's or target's id is in flag_metadata["rule"]. A bootstrapped config with targeting (the
    server side of issue 12 lands separately), the client pointed at a dead port."""
    flag = {
        "key": "checkout-button",
        "salt": "s",
        "state": "running",
        "exploration": 1.0,
        "version": 3,
        "variants": [{"key": "blue", "value": "#00f"}, {"key": "green", "value": "#0f0"}],
        "control": "blue",
        "weights": [1.0, 0.0],
        "table": [[0, 10_000]],
        "objective": {"reward": "binary", "unit": "decision"},
        "targets": [{"variant": "green", "units": ["pinned"]}],
        "rules": [
            {
                "id": "staff",
                "clauses": [{"attribute": "email", "op": "ends_with", "values": ["@corp.test"]}],
                "serve": {"variant": "green"},
            }
        ],
    }
    client = Client("http://127.0.0.1:9", "bf_sdk_x", bootstrap={"schema": 1, "revision": 1, "flags": [flag]})
    try:
        api.set_provider_and_wait(BanditflagsProvider(client), "targeting")
        of = api.get_client("targeting")
        staff = of.get_string_details(
            "checkout-button", "x", EvaluationContext("u1", {"email": "a@corp.test"})
        )
        assert (staff.value, staff.variant, staff.flag_metadata["rule"]) == ("#0f0", "green", "staff")
        assert str(staff.flag_metadata["token"]).startswith("bf2:checkout-button/staff:3:1:")
        other = of.get_string_details("checkout-button", "x", EvaluationContext("u1", {"email": "a@b.test"}))
        assert other.variant == "blue" and "rule" not in other.flag_metadata
        pinned = of.get_string_details("checkout-button", "x", EvaluationContext("pinned"))
        assert pinned.variant == "green" and pinned.flag_metadata["rule"] == "target"
        odd = of.get_string_details("checkout-button", "x", EvaluationContext("u1", {"email": [1, None]}))
        assert odd.variant == "blue" and odd.error_code is None  # an odd value: no match, no error
    finally:
        client.close(0.5)
