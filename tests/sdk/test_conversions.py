"""Conversions count once (issue 11, the SDK side): decision ids, repeats by every route, user units,
continuous sums, unknown flag keys, and a property test of the rates a simulation with repeats reports."""

from __future__ import annotations

import logging
import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banditflags import Decision, Reason
from banditflags._inputs import reward_item
from banditflags._models import Bucketed
from banditflags._units import unit_did

MakeClient = Any
# Every test twice: track()'s compiled fast path and the Python method alone (conftest.track_impl).
pytestmark = pytest.mark.usefixtures("track_impl")


def test_one_decision_tracked_every_way_counts_once(make_client: MakeClient, server: Any) -> None:
    client = make_client(background=False)
    assert client.refresh()
    d = client.decide("btn", "alice")
    assert d.decision_id is not None and d.token == f"bf2:btn:1:{d.arm}:{d.decision_id}"
    assert client.track(d) is True
    assert client.track(d) is False  # a page reload
    assert client.track(d.token) is False  # a retried webhook
    assert client.track("btn", "alice") is False  # by unit: the same decision
    assert client.stats().duplicates == 3
    assert client.flush(2.0)
    (body,) = server.event_requests
    (row,) = body["rewards"]
    assert (row["count"], row["sum"], row["sum_sq"], row["ids"]) == (1, 1.0, 1.0, [d.decision_id])
    # a new decision of the same unit may convert again
    d2 = client.decide("btn", "alice")
    assert d2.decision_id != d.decision_id and client.track("btn", "alice") is True


def test_a_token_tracked_in_another_process_sends_its_id(make_client: MakeClient, server: Any) -> None:
    a, b = make_client(background=False), make_client(background=False)
    assert a.refresh() and b.refresh()
    token = a.decide("btn", "bob").token
    assert b.track(token) is True and b.track(token) is False
    assert b.flush(2.0)
    (row,) = server.event_requests[-1]["rewards"]
    assert row["ids"] == [token.split(":")[4]]  # the server de-duplicates across processes by this id


def test_variant_then_track_by_unit(make_client: MakeClient, server: Any) -> None:
    client = make_client(background=False)
    assert client.refresh()
    client.variant("btn", "carol")
    assert client.track("btn", "carol") is True  # no memory yet: the arm carol buckets into now
    assert client.track("btn", "carol") is False
    client.variant("btn", "carol")  # remembered from now on: a new decision
    assert client.track("btn", "carol") is True and client.track("btn", "carol") is False
    assert client.flush(2.0)
    ((key, (count, conversions, _)),) = server.rewards().items()
    assert count == conversions == 2 and server.exposures() == {key: 2}  # both on carol's arm


def test_user_unit_counts_one_exposure_and_one_conversion_per_window(
    make_client: MakeClient, server: Any, build: Any
) -> None:
    server.set_config(
        build.config(build.flag(objective={"reward": "binary", "unit": "user", "credit_window": 3600}))
    )
    client = make_client(background=False)
    assert client.refresh()
    for _ in range(3):
        client.variant("btn", "dave")
    d = client.decide("btn", "dave")
    assert d.decision_id == unit_did("salt-btn", "dave")
    assert client.track("btn", "dave") is True
    assert client.track(d) is False and client.track(d.token) is False
    client.variant("btn", "erin")
    assert client.flush(2.0)
    assert sum(server.exposures().values()) == 2  # dave once, erin once
    (row,) = server.event_requests[-1]["rewards"]
    assert row["count"] == 1 and row["ids"] == [unit_did("salt-btn", "dave")]


def test_continuous_rewards_of_one_decision_add_up(make_client: MakeClient, server: Any, build: Any) -> None:
    server.set_config(build.config(build.flag(objective={"reward": "continuous"})))
    client = make_client(background=False)
    assert client.refresh()
    d, e = client.decide("btn", "u1"), client.decide("btn", "u2")
    if e.arm != d.arm:
        e = next(x for x in (client.decide("btn", f"v{i}") for i in range(100)) if x.arm == d.arm)
    for r in (3.0, 4.0):
        assert client.track(d, reward=r)  # two purchases after one decision: worth 7
    assert client.track(e.token, reward=5.0)
    assert client.flush(2.0)
    (row,) = server.event_requests[-1]["rewards"]
    assert row["count"] == 3 and row["sum"] == 12.0 and row["sum_sq"] == 7.0**2 + 5.0**2 and "ids" not in row


def test_unknown_flag_is_logged_once_and_counted(make_client: MakeClient, caplog: Any) -> None:
    client = make_client(background=False)
    assert client.refresh()
    with caplog.at_level(logging.WARNING, logger="banditflags"):
        for _ in range(5):
            assert client.variant("chekout-button", "u1", "off") == "off"
        client.decide("chekout-button", "u1")
        assert client.flush(2.0)
    assert client.stats().unknown_flags == 6
    lines = [r for r in caplog.records if "not in the configuration" in r.getMessage()]
    assert len(lines) == 1 and "chekout-button" in lines[0].getMessage()


# A simulation: units decide (several times each); some decisions convert, and every conversion is
# tracked a random number of times by a random route. The rate the SDK reports per arm must be the true
# per-decision conversion rate (so within [0, 1]).
_ops = st.lists(
    st.tuples(
        st.integers(0, 7), st.integers(1, 3), st.booleans(), st.lists(st.sampled_from("dtu"), max_size=4)
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_ops)
def test_rates_equal_the_true_per_decision_rate(make_client: MakeClient, server: Any, ops: list[Any]) -> None:
    server.accepted.clear()
    client = make_client(background=False)
    assert client.refresh()
    true_conv: dict[int, int] = {}
    true_n: dict[int, int] = {}
    for unit, decisions, converts, routes in ops:
        uid = f"u{unit}"
        d = None
        for _ in range(decisions):
            d = client.decide("btn", uid)
            true_n[d.arm] = true_n.get(d.arm, 0) + 1
        assert d is not None
        if converts and routes:
            true_conv[d.arm] = true_conv.get(d.arm, 0) + 1
            for route in routes:  # the latest decision of the unit, tracked again and again
                target = {"d": (d,), "t": (d.token,), "u": ("btn", uid)}[route]
                client.track(*target)
    assert client.flush(2.0)
    client.close()
    n = {arm: c for (_, _, arm), c in server.exposures().items()}
    s = {arm: r[1] for (_, _, arm), r in server.rewards().items()}
    assert n == true_n
    for arm, count in n.items():
        rate = s.get(arm, 0.0) / count
        assert 0.0 <= rate <= 1.0
        assert rate == true_conv.get(arm, 0) / count


def test_a_bad_hand_made_id_never_costs_the_batch(make_client: MakeClient, server: Any) -> None:
    client = make_client(background=False)
    assert client.refresh()
    assert client.track(Decision("btn", "b", "B", Reason.SPLIT, 1, 1, 0.5, decision_id="-12ab"))
    assert client.flush(2.0)
    (row,) = server.event_requests[-1]["rewards"]
    assert row["sum"] == 1.0 and "ids" not in row


_GOOD = {"flag": "btn", "variant": "b", "value": "B", "reason": Reason.SPLIT, "version": 1, "arm": 1}


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"decision_id": "-12ab"},  # not 16 hex digits: counted without an id
        {"decision_id": "00000000000000BB"},  # upper case: not an id we mint
        {"decision_id": 1234},
        {"version": 0},
        {"version": True},
        {"version": 1.0},
        {"arm": 2},  # out of range for two variants
        {"arm": -1},
        {"arm": True},
        {"reason": Reason.ERROR},
        {"reason": Reason.DISABLED},
        {"reason": "split"},  # a string is no Reason
        {"rule": 7},
        {"rule": "target"},
        {"flag": "nope"},
    ],
)
def test_track_of_a_hand_made_decision_agrees_with_the_general_path(
    make_client: MakeClient, server: Any, fields: dict[str, Any]
) -> None:
    """track(decision) trusts only the Decisions decide() makes (Bucketed); a hand-made one, good or
    bad, is checked as the general path (reward_item) checks it: accepted or refused, and the id it
    sends, as reward_item decides for the same Decision."""
    client = make_client(background=False)
    assert client.wait_until_ready(5.0)
    kwargs = {"decision_id": "00000000000000bb", **_GOOD, **fields}
    d = Decision(
        kwargs.pop("flag"), kwargs.pop("variant"), kwargs.pop("value"), kwargs.pop("reason"), **kwargs
    )
    expected = reward_item(client._flags, d, None, 1.0, None, 0.0)
    assert client.track(d) is (expected is not None)
    assert client.flush(2.0)
    rows = [row for body in server.accepted.values() for row in body["rewards"]]
    if expected is None:
        assert rows == []
    else:
        (row,) = rows
        assert (row["version"], row["arm"], row.get("rule")) == (*expected[1][2:], expected[1][1])
        assert row.get("ids") == ([expected[2]] if expected[2] is not None else None)


def test_track_of_decisions_decide_made_agrees_with_the_general_path(
    make_client: MakeClient, server: Any
) -> None:
    """The Decisions decide() makes on a default allocation are Bucketed (track() trusts their fields)
    and are credited as reward_item credits them: the same version, arm and id; a copy that comes
    back from pickling is a plain Decision and still counts once."""
    client = make_client(background=False)
    assert client.wait_until_ready(5.0)
    decisions = [client.decide("btn", f"unit-{i}") for i in range(40)]
    assert all(type(d) is Bucketed for d in decisions)
    assert len({d.arm for d in decisions}) == 2  # both arms
    expected = [reward_item(client._flags, Decision(*d), None, 1.0, None, 0.0) for d in decisions]
    assert all(client.track(d) for d in decisions)
    assert not any(client.track(pickle.loads(pickle.dumps(d))) for d in decisions)  # once per decision
    assert client.flush(2.0)
    rows = [row for body in server.accepted.values() for row in body["rewards"]]
    sent = sorted((row["version"], row["arm"], i) for row in rows for i in row["ids"])
    assert sent == sorted((e[1][2], e[1][3], e[2]) for e in expected if e is not None)
    assert client.stats().duplicates == len(decisions)


@pytest.mark.parametrize("served", [False, True])
def test_track_by_unit_agrees_with_the_general_path(
    make_client: MakeClient, server: Any, served: bool
) -> None:
    """track(flag, unit) checks inline, for a unit served within the credit window and for one not
    served (bucketed now, its id a hash of salt, version and unit): the row and the id it sends are
    what reward_item decides for a twin client in the same state."""
    client, twin = make_client(background=False), make_client(background=False)
    assert client.wait_until_ready(5.0) and twin.wait_until_ready(5.0)
    units = [f"unit-{i}" for i in range(20)]
    if served:
        for c in (client, twin):
            c.track("btn", "someone")  # the flag's units are remembered from now on
            for u in units:
                c.variant("btn", u)
        twin_flags = twin._flags
        for u in units:  # the same arms; the ids differ per client (drawn), so compare with the twin's own
            assert twin_flags["btn"].units.get(u)[1] == client._flags["btn"].units.get(u)[1]
    assert client.flush(2.0)
    before = set(server.accepted)
    expected = {}
    for u in units:
        res = reward_item(twin._flags, "btn", u, 1.0, None, 0.0)
        assert res is not None
        expected[u] = res
        assert client.track("btn", u) is True and client.track("btn", u) is False
    assert client.flush(2.0)
    rows = [row for b, body in server.accepted.items() if b not in before for row in body["rewards"]]
    sent = sorted(i for row in rows for i in row["ids"])
    if not served:  # the ids are hashes of (salt, version, unit): the same in both clients
        assert sent == sorted(res[2] for res in expected.values())
    arms = sorted(res[1][3] for res in expected.values())
    assert sorted(row["arm"] for row in rows for _ in row["ids"]) == arms
    assert all(row["version"] == 1 and "rule" not in row for row in rows)


def test_track_after_close_records_nothing_and_answers_as_before(
    make_client: MakeClient, server: Any
) -> None:
    """A closed client's track() answers (once per decision still) and records nothing: its snapshot's
    conversion lists stay empty, nothing is dropped, nothing is sent."""
    client = make_client(background=False)
    assert client.wait_until_ready(5.0)
    decisions = [client.decide("btn", f"c{i}") for i in range(3)]
    assert client.close(2.0)
    sent = len(server.event_requests)
    assert client.track(decisions[0]) is True and client.track(decisions[0]) is False
    assert client.track(decisions[1].token) is True and client.track("btn", "c2") is True
    assert client.track("btn", "never-served") is True
    assert all(ids == [] for ids in client._flags["btn"].conversions)
    assert client.stats().decisions_dropped == 0 and client.flush(1.0) is True
    assert len(server.event_requests) == sent
