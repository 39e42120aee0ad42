"""Targeting wired into the client (DESIGN.md §9, notes/wire12.md): the config's targets, rules,
rule_allocations and segments; routing order; what exposures, rewards and tokens carry; stickiness of
a rule's table; old configs; attributes that never raise. Against the in-process fake server."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import math
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banditflags import Client, ConfigError, Decision, Reason
from banditflags._bucketing import bucket_of, decode_table, table_from_weights
from banditflags._config import parse_config
from banditflags._token import parse_token

MakeClient = Callable[..., Client]
SALT = "salt-t"
US_V1 = [[0, 8000], [1, 1000], [2, 1000]]
# The server's minimal-movement step from US_V1: buckets 7000..7999 move from arm 0 to arm 1, nothing else.
US_V2 = [[0, 7000], [1, 1000], [1, 1000], [2, 1000]]


def targeted_flag(**overrides: Any) -> dict[str, Any]:
    flag: dict[str, Any] = {
        "key": "t",
        "salt": SALT,
        "state": "running",
        "exploration": 1.0,
        "version": 4,
        "variants": [{"key": "a", "value": 0}, {"key": "b", "value": 1}, {"key": "c", "value": 2}],
        "control": "a",
        "weights": [0.34, 0.33, 0.33],
        "table": [[0, 3334], [1, 3333], [2, 3333]],
        "objective": {"reward": "binary", "unit": "decision"},
        "policy": "thompson",
        "targets": [{"variant": "b", "units": ["alice"]}, {"variant": "c", "units": ["carol"]}],
        "rules": [
            {
                "id": "staff",
                "clauses": [{"attribute": "email", "op": "ends_with", "values": ["@corp.test"]}],
                "serve": {"variant": "c"},
            },
            {
                "id": "beta",
                "clauses": [{"op": "in_segment", "values": ["beta"]}],
                "serve": {"weights": [0, 1, 1]},
            },
            {
                "id": "us",
                "clauses": [{"attribute": "country", "op": "in", "values": ["us"]}],
                "serve": {"bandit": True},
            },
        ],
        "rule_allocations": {"us": {"version": 9, "weights": [0.8, 0.1, 0.1], "table": US_V1}},
    }
    flag.update(overrides)
    return flag


SEGMENTS = [
    {"key": "beta", "clauses": [{"attribute": "plan", "op": "in", "values": ["beta"]}], "included": ["bob"]}
]


def targeted_config(flag: dict[str, Any] | None = None, revision: int = 1) -> dict[str, Any]:
    return {
        "schema": 1,
        "revision": revision,
        "segments": copy.deepcopy(SEGMENTS),
        "flags": [flag if flag is not None else targeted_flag()],
    }


@pytest.fixture
def client(make_client: MakeClient, server: Any) -> Iterator[Client]:
    server.set_config(targeted_config())
    c = make_client()
    assert c.wait_until_ready(5.0)
    yield c


def default_arm(unit: str) -> int:
    return decode_table([[0, 3334], [1, 3333], [2, 3333]])[bucket_of(SALT, unit)]


# -- routing ----------------------------------------------------------------------------------------


def test_evaluation_order_targets_then_rules_in_order_then_default(client: Client) -> None:
    corp = {"email": "x@corp.test", "country": "us", "plan": "beta"}
    # a target wins over every rule the unit also matches
    d = client.decide("t", "alice", attributes=corp)
    assert (d.variant, d.rule, d.version, d.propensity, d.reason) == ("b", "target", 4, 1.0, Reason.SPLIT)
    assert client.decide("t", "carol").rule == "target" and client.variant("t", "carol") == "c"
    # rules in order: staff (1st) before beta (2nd) before us (3rd)
    assert client.decide("t", "dave", attributes=corp).rule == "staff"
    assert client.variant("t", "dave", attributes=corp) == "c"
    assert client.decide("t", "dave", attributes={"plan": "beta", "country": "us"}).rule == "beta"
    # segment membership by id needs no attribute (wire12: attributes=None still evaluates it)
    beta = table_from_weights([0, 1, 1])
    d = client.decide("t", "bob")
    assert (
        d.rule == "beta" and d.arm == beta[bucket_of(SALT, "bob")] and d.version == 4 and d.propensity == 0.5
    )
    # the bandit rule: its own version, table and propensities
    for unit in ("erin", "u1", "u2", "u3"):
        d = client.decide("t", unit, attributes={"country": "us"})
        assert d.rule == "us" and d.version == 9
        assert d.arm == decode_table(US_V1)[bucket_of(SALT, unit)]
        assert d.propensity == [0.8, 0.1, 0.1][d.arm] and (d.token or "").startswith(f"bf2:t/us:9:{d.arm}:")
    # nothing matched: the default allocation, exactly as a flag without targeting
    for attrs in (None, {}, {"country": "fr"}, {"email": 7}):
        d = client.decide("t", "frank", attributes=attrs)
        assert d.rule is None and d.version == 4 and d.arm == default_arm("frank")
        assert (d.token or "").startswith(f"bf2:t:4:{d.arm}:")


def test_killed_flag_serves_control_to_targets_and_rules(make_client: MakeClient, server: Any) -> None:
    server.set_config(targeted_config(targeted_flag(state="killed")))
    client = make_client()
    assert client.wait_until_ready(5.0)
    for unit, attrs in (("alice", None), ("dave", {"email": "x@corp.test"}), ("erin", {"country": "us"})):
        d = client.decide("t", unit, attributes=attrs)
        assert (d.variant, d.reason, d.rule, d.token) == ("a", Reason.DISABLED, None, None)
        assert client.variant("t", unit, attributes=attrs) == "a"
    assert client.flush(5.0)
    assert server.exposures() == {}


def test_exposure_and_reward_rows_carry_rule_and_version(client: Client, server: Any) -> None:
    us = client.decide("t", "erin", attributes={"country": "us"})
    tgt = client.decide("t", "alice")
    plain = client.decide("t", "frank")
    client.decide("t", "dave", attributes={"email": "d@corp.test"})  # remembered for track by unit
    assert client.track(us, reward=1)  # by Decision
    assert client.track(tgt.token or "", reward=1)  # by token
    assert client.track(plain, reward=0)
    assert client.track("t", "dave", reward=1)  # by flag + unit: the remembered rule
    assert client.track("t", "carol", reward=1)  # by flag + unit, never served: routed without attributes
    assert client.flush(5.0)
    rows: dict[tuple[Any, ...], int] = {}
    rewards: dict[tuple[Any, ...], float] = {}
    for body in server.accepted.values():
        for r in body["exposures"]:
            key = (r.get("rule"), r["version"], r["arm"])
            rows[key] = rows.get(key, 0) + r["count"]
        for r in body["rewards"]:
            assert "rule" not in r or r["rule"] is not None  # absent, never null
            rewards[(r.get("rule"), r["version"], r["arm"])] = r["sum"]
    assert rows == {("us", 9, us.arm): 1, ("target", 4, 1): 1, (None, 4, plain.arm): 1, ("staff", 4, 2): 1}
    assert rewards == {
        ("us", 9, us.arm): 1.0,
        ("target", 4, 1): 1.0,
        (None, 4, plain.arm): 0.0,
        ("staff", 4, 2): 1.0,
        ("target", 4, 2): 1.0,
    }


def test_decision_tokens_carry_the_rule(client: Client) -> None:
    d = client.decide("t", "erin", attributes={"country": "us"})
    tok = parse_token(d.token)
    assert tok is not None and (tok.flag, tok.rule, tok.version, tok.arm) == ("t", "us", 9, d.arm)
    assert parse_token(client.decide("t", "alice").token).rule == "target"  # type: ignore[union-attr]
    assert parse_token(client.decide("t", "frank").token).rule is None  # type: ignore[union-attr]


def test_a_rule_table_is_used_as_given_so_its_stickiness_is_the_servers(
    make_client: MakeClient, server: Any
) -> None:
    server.set_config(targeted_config())
    client = make_client()
    assert client.wait_until_ready(5.0)
    units = [f"user-{i}" for i in range(3000)]
    us = {"country": "us"}
    before = {u: client.decide("t", u, attributes=us) for u in units}
    plain_before = {u: client.variant("t", u) for u in units}
    flag = targeted_flag(rule_allocations={"us": {"version": 10, "weights": [0.7, 0.2, 0.1], "table": US_V2}})
    server.set_config(targeted_config(flag, revision=2))
    assert client.refresh(5.0)
    after = {u: client.decide("t", u, attributes=us) for u in units}
    moved = {u for u in units if after[u].arm != before[u].arm}
    # exactly the units whose bucket the server moved, and only from arm 0 to arm 1
    assert moved == {u for u in units if 7000 <= bucket_of(SALT, u) < 8000}
    assert all(before[u].arm == 0 and after[u].arm == 1 for u in moved)
    assert all(d.version == 10 and d.rule == "us" for d in after.values())
    assert {u: client.variant("t", u) for u in units} == plain_before  # the default allocation untouched


# -- config -----------------------------------------------------------------------------------------


def test_config_without_targeting_is_parsed_as_before(build: Any) -> None:
    f = parse_config(build.config()).flags["btn"]
    assert f.route is None and not f.detour and f.rule is None and f.targeting == ""
    assert all(k[3] is None for k in f.exposure_keys) and all(d.rule is None for d in f.decisions)
    # empty lists are no targeting either
    g = parse_config(build.config(build.flag(targets=[], rules=[], rule_allocations={}))).flags["btn"]
    assert g == f and g.route is None


OLD_CONFIG = "c502d6c"  # the last commit whose _config.py predates targeting


def test_a_config_with_targeting_parsed_by_the_old_sdk_serves_the_default(tmp_path: Path) -> None:
    """Old SDKs ignore targets, rules, rule_allocations and segments (wire12.md): the old parser,
    taken from git history, accepts a config with all of them and serves the default allocation."""
    repo = Path(__file__).resolve().parents[2]
    try:
        source = subprocess.run(
            ["git", "show", f"{OLD_CONFIG}:sdk/banditflags/_config.py"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git history not available")
    path = tmp_path / "_old_config.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("banditflags._old_config", path)
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old
    try:
        spec.loader.exec_module(old)
        snap = old.parse_config(targeted_config())
    finally:
        del sys.modules[spec.name]
    f = snap.flags["t"]
    assert not hasattr(f, "route") and f.version == 4
    assert f.table == decode_table([[0, 3334], [1, 3333], [2, 3333]])


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (
            {
                "rules": [
                    {
                        "id": "x",
                        "clauses": [{"op": "in_segment", "values": ["nope"]}],
                        "serve": {"variant": "a"},
                    }
                ]
            },
            "flags[0].rules[0].clauses[0].values[0]",
        ),
        (
            {
                "rules": [
                    {
                        "id": "x",
                        "clauses": [{"attribute": "k", "op": "lt", "values": ["5"]}],
                        "serve": {"variant": "a"},
                    }
                ]
            },
            "flags[0].rules[0].clauses[0].values[0]",
        ),
        ({"rule_allocations": {}}, "flags[0].rules[2].serve.bandit"),
        (
            {"rule_allocations": {"us": {"version": 9, "weights": [1, 0, 0], "table": [[0, 9999]]}}},
            "flags[0].rule_allocations.us.table",
        ),
        (
            {"rule_allocations": {"us": {"version": 0, "weights": [1, 0, 0], "table": US_V1}}},
            "flags[0].rule_allocations.us.version",
        ),
        ({"targets": [{"variant": "zz", "units": ["u"]}]}, "flags[0].targets[0].variant"),
    ],
)
def test_bad_targeting_rejects_the_config_naming_the_field(change: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(targeted_config(targeted_flag(**change)))
    assert info.value.path == path


def test_a_rejected_config_keeps_the_last_good_one(client: Client, server: Any) -> None:
    bad = targeted_flag(rules=[{"id": "x", "clauses": [{"op": "bogus"}], "serve": {"variant": "a"}}])
    server.set_config(targeted_config(bad, revision=2))
    assert not client.refresh(5.0) or client.stats().config_revision == 1
    assert client.stats().config_revision == 1 and client.stats().config_errors >= 1
    assert client.decide("t", "erin", attributes={"country": "us"}).rule == "us"


def test_unchanged_targeting_keeps_the_snapshot_equal() -> None:
    a = parse_config(targeted_config()).flags["t"]
    b = parse_config(targeted_config(revision=2)).flags["t"]
    assert a == b and a.route is not b.route
    moved = targeted_flag(
        rule_allocations={"us": {"version": 10, "weights": [0.7, 0.2, 0.1], "table": US_V2}}
    )
    assert parse_config(targeted_config(moved)).flags["t"] != a
    cfg = targeted_config()
    cfg["segments"][0]["included"] = ["bob", "zed"]
    assert parse_config(cfg).flags["t"] != a  # a segment the flag names changed


# -- never raise ------------------------------------------------------------------------------------


class Raising(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=8),
    st.just(math.nan),
    st.just(object()),
    st.sampled_from(["us", "x@corp.test", "beta", "1.2.3", "2024-01-01T00:00:00Z"]),
)
values = st.one_of(
    scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=3), scalars, max_size=2)
)
names = st.sampled_from(["email", "country", "plan", "age", "", "x" * 300]) | st.text(max_size=5)
attribute_maps = st.one_of(
    st.dictionaries(names, values, max_size=6),
    st.none(),
    st.integers(),
    st.text(max_size=5),
    st.lists(scalars, max_size=3),
    st.just(Raising()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(unit=st.one_of(st.text(max_size=12), st.integers(), st.none()), attrs=attribute_maps)
def test_random_attributes_never_raise(client: Client, unit: Any, attrs: Any) -> None:
    d = client.decide("t", unit, attributes=attrs)
    v = client.variant("t", unit, attributes=attrs)
    assert isinstance(d, Decision) and d.rule in (None, "target", "staff", "beta", "us")
    assert d.reason in (Reason.SPLIT, Reason.ERROR) and v == d.variant
    if d.reason is Reason.SPLIT:
        assert client.track(d, reward=1)


def test_a_new_config_keeps_rule_decisions_remembered_and_counted(client: Client, server: Any) -> None:
    us = {"country": "us"}
    for i in range(100):
        client.variant("t", f"u{i}", attributes=us)
    d = client.decide("t", "erin", attributes=us)
    server.set_config(targeted_config(revision=2))  # the same targeting: new snapshots, same allocations
    assert client.refresh(5.0) and client.stats().config_revision == 2
    f = client._flags["t"]
    assert f.rule_snapshots and all(g.units is f.units for g in f.rule_snapshots)
    for i in range(100):
        client.variant("t", f"u{i}", attributes=us)
    assert client.track("t", "erin", reward=1)  # remembered across the swap: the rule's decision
    assert client.flush(5.0)
    exposed = sum(n for (flag, v, _), n in server.exposures().items() if flag == "t" and v == 9)
    assert exposed == 201  # every exposure of the rule, before and after the swap, counted once
    rows = [r for b in server.accepted.values() for r in b["rewards"]]
    assert [(r.get("rule"), r["version"], r["arm"], r["count"]) for r in rows] == [("us", 9, d.arm, 1)]


def test_docstring_examples() -> None:
    import doctest

    from banditflags import _routing

    assert doctest.testmod(_routing).failed == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(["variant", "weights", "bandit", "us", "beta", "in_segment", "in", "a", "c"]),
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(["targets", "rules", "rule_allocations", "segments"]),
    path=st.lists(
        st.one_of(st.integers(0, 3), st.sampled_from(["id", "clauses", "serve", "values", "op", "us"])),
        max_size=4,
    ),
    value=field_values,
)
def test_any_targeting_payload_parses_or_is_a_config_error(field: str, path: list[Any], value: Any) -> None:
    """Mutate one place of a good config's targeting: parse_config answers a snapshot or a ConfigError
    naming a field, nothing else (the config thread must never see another exception)."""
    cfg = targeted_config()
    node: Any = cfg if field == "segments" else cfg["flags"][0]
    keys = [field, *path]
    for k in keys[:-1]:
        try:
            node = node[k]
        except (KeyError, IndexError, TypeError):
            break
    else:
        with contextlib.suppress(IndexError, TypeError):
            node[keys[-1]] = value  # a non-string key in a dict: what a bootstrap Mapping may hold
    try:
        snap = parse_config(cfg)
    except ConfigError as exc:
        assert exc.path.startswith(("flags[0]", "segments")) or exc.path == "", exc.path
        return
    f = snap.flags["t"]
    assert f.route is None or f.route("alice", {"country": "us"}) is not None
