"""Decision tokens: round trip, and garbage never raises."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from banditflags import Decision, Reason
from banditflags._token import Token, make_token, parse_token


def test_round_trip() -> None:
    token = make_token("checkout-button.v2", 17, 3)
    assert token == "bf1:checkout-button.v2:17:3"
    assert parse_token(token) == Token("checkout-button.v2", 17, 3)
    d = Decision("checkout-button.v2", "x", 1, Reason.SPLIT, 17, 3, 0.1)
    assert parse_token(d.token) == Token("checkout-button.v2", 17, 3)


def test_tokens_only_for_bucketed_decisions() -> None:
    for reason in (Reason.SPLIT, Reason.STALE, Reason.CACHED):
        assert Decision("f", "a", 1, reason, 1, 0, 1.0).token == "bf1:f:1:0"
    for reason in (Reason.DISABLED, Reason.ERROR, Reason.DEFAULT):
        assert Decision("f", "a", 1, reason, 1, 0, 1.0).token is None
    assert Decision("f", None, 1, Reason.SPLIT).token is None


def test_garbage() -> None:
    for bad in [
        "",
        "bf1",
        "bf1:f:1",
        "bf1:f:1:0:0",
        "bf2:f:1:0",
        "bf1:F:1:0",
        "bf1:f:0:0",
        "bf1:f:-1:0",
        "bf1:f:1:100",
        "bf1:f:1:x",
        "bf1:f:1:0\n",
        "bf1:f: 1:0",
        "bf1:f:١:0",
        None,
        5,
        b"bf1:f:1:0",
        "bf1:" + "a" * 200 + ":1:0",
    ]:
        assert parse_token(bad) is None, bad


@given(st.one_of(st.text(), st.binary(), st.integers(), st.none(), st.lists(st.text())))
def test_parse_never_raises(value: object) -> None:
    result = parse_token(value)
    assert result is None or isinstance(result, Token)


@given(
    st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,63}", fullmatch=True),
    st.integers(1, 10**12),
    st.integers(0, 99),
    st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)),
    st.booleans(),
)
def test_round_trip_property(flag: str, version: int, arm: int, rule: str | None, traced: bool) -> None:
    trace, span = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7") if traced else (None, None)
    token = make_token(flag, version, arm, trace, span, rule=rule)
    assert parse_token(token) == (flag, version, arm, trace, span, None, rule)
    did = f"{(version * 2654435761) % 2**64:016x}"
    token = make_token(flag, version, arm, trace, span, did, rule)
    assert parse_token(token) == (flag, version, arm, trace, span, did, rule)
