"""Decision as a record: fields by name in order, immutable, equal when it decided the same (the id
aside), hashable, picklable, printable, matchable; built by the SDK with one C call."""

from __future__ import annotations

import copy
import doctest
import inspect
import pickle

import pytest

import banditflags._models as models
from banditflags import Decision, ErrorType, Reason


def decision(did: str | None = "9f86d081884c7d65", **changes: object) -> Decision:
    fields = dict(flag="f", variant="green", value={"c": 1}, reason=Reason.SPLIT, version=3, arm=1)
    fields.update(propensity=0.5, trace_id="a" * 32, span_id="b" * 16, decision_id=did, rule="staff")
    fields.update(changes)
    return Decision(**fields)  # type: ignore[arg-type]


def test_docstring_examples() -> None:
    result = doctest.testmod(models)
    assert result.failed == 0 and result.attempted > 0


def test_fields_by_name_in_the_constructors_order() -> None:
    params = list(inspect.signature(Decision).parameters)
    assert tuple(params) == Decision.__match_args__
    d = decision()
    assert [getattr(d, n) for n in params] == list(d)
    assert (d.flag, d.arm, d.decision_id, d.rule, d.error_type) == ("f", 1, "9f86d081884c7d65", "staff", None)
    assert Decision("f", None, 0, Reason.ERROR, error_type=ErrorType.GENERAL).version is None


@pytest.mark.parametrize("name", ["flag", "variant", "decision_id", "token", "rule"])
def test_immutable(name: str) -> None:
    d = decision()
    with pytest.raises(AttributeError):
        setattr(d, name, "x")
    with pytest.raises(AttributeError):
        d.other = 1  # type: ignore[attr-defined]


def test_equal_when_it_decided_the_same_the_id_aside() -> None:
    assert decision("0000000000000001") == decision("0000000000000002")
    assert hash(decision("0000000000000001", value="v")) == hash(decision("0000000000000002", value="v"))
    assert decision() != decision(arm=2)
    assert decision() != decision(rule=None)
    assert decision() != tuple(decision())  # a record, not any tuple with the same items
    assert tuple(decision()) != decision() and [decision()] != [tuple(decision())]


def test_pickle_copy_and_repr_keep_every_field() -> None:
    d = decision()
    for other in (pickle.loads(pickle.dumps(d)), copy.copy(d), copy.deepcopy(d)):
        assert type(other) is Decision and other == d and other.decision_id == d.decision_id
    assert repr(d).startswith("Decision(flag='f', variant='green', value={'c': 1}, reason=<Reason.SPLIT")
    assert "decision_id='9f86d081884c7d65', rule='staff')" in repr(d)


def test_match_by_position_and_keyword() -> None:
    match decision():
        case Decision("f", variant, rule="staff"):
            assert variant == "green"
        case _:
            pytest.fail("no match")


def test_the_sdks_fast_construction_is_the_same_record() -> None:
    fields = tuple(decision())
    fast = tuple.__new__(Decision, fields)  # as _client and _telemetry build it
    assert fast == decision() and fast.decision_id == "9f86d081884c7d65" and fast.token == decision().token


def test_span_ids_kept_as_ints_read_as_hex() -> None:
    """A decision made inside a trace keeps its span's ids as the span context's ints (formatting them
    on every traced decision cost ~0.2 µs): read, compared, hashed, printed, pickled and put in the
    token as the hex the same decision with string ids has."""
    trace, span = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
    fields = ("btn", "b", "B", Reason.SPLIT, 1, 1, 0.5, None, None)
    lazy = tuple.__new__(Decision, (*fields, trace, span, "9f86d081884c7d65", None))
    text = Decision(*fields, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "9f86d081884c7d65")
    assert (lazy.trace_id, lazy.span_id) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert lazy == text and hash(lazy) == hash(text) and repr(lazy) == repr(text)
    assert lazy.token == text.token and lazy.token.endswith(
        ":4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7"
    )
    back = pickle.loads(pickle.dumps(lazy))
    assert back == text and back.trace_id == text.trace_id and back.decision_id == text.decision_id
