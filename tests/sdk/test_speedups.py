"""The compiled fast paths (``banditflags._speedups``: track()'s, and decide()'s plain case): its hashes
are mmh3's, it is bound to every client (and can be turned off), and a client running it answers and
records exactly what a client running the Python code alone does, over random sequences of calls (the
differential test). decide()'s compiled path inside a span: tests/sdk/test_telemetry.py."""

from __future__ import annotations

import gc
import inspect
import json
import shutil
import sys
import threading
import weakref
from typing import Any

import httpx
import mmh3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banditflags import Client
from banditflags._units import keyed_dict, unit_did

try:
    from banditflags import _speedups as speedups
except ImportError:  # built without a C compiler: the Python path is tested alone
    speedups = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(speedups is None, reason="the C extension was not built")


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_the_extension_is_built_where_there_is_a_c_compiler() -> None:
    # The build makes it optional (setup.py): a failed compile must not pass unnoticed here.
    import banditflags._speedups  # noqa: F401


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300).filter(_encodable))
def test_the_hashes_are_mmh3s(text: str) -> None:
    assert speedups.hash32(text) == mmh3.hash(text, 0, False)
    assert speedups.hash64(text) == mmh3.hash64(text, signed=False)[0]


@pytest.mark.parametrize("n", range(0, 40))
def test_the_hashes_are_mmh3s_for_every_tail_length(n: int) -> None:
    text = "".join(chr(0x61 + (i * 7) % 26) for i in range(n))  # every length mod 4 and mod 16
    assert speedups.hash32(text) == mmh3.hash(text, 0, False)
    assert speedups.hash64(text) == mmh3.hash64(text, signed=False)[0]
    wide = "é" + text  # two UTF-8 bytes: the other parity
    assert speedups.hash32(wide) == mmh3.hash(wide, 0, False)
    assert speedups.hash64(wide) == mmh3.hash64(wide, signed=False)[0]


def _flag(key: str, unit: str = "decision", version: int = 1, reward: str = "binary") -> dict[str, Any]:
    return {
        "key": key,
        "salt": f"salt-{key}",
        "state": "running",
        "exploration": 1.0,
        "version": version,
        "variants": [{"key": "a", "value": "A"}, {"key": "b", "value": "B"}, {"key": "c", "value": "C"}],
        "control": "a",
        "weights": [0.4, 0.3, 0.3],
        "table": [[0, 4000], [1, 3000], [2, 3000]],
        "objective": {"reward": reward, "direction": "maximize", "unit": unit, "credit_window": 86400},
        "policy": "thompson",
    }


def _config(version: int = 1, revision: int = 1) -> dict[str, Any]:
    return {
        "schema": 1,
        "revision": revision,
        "flags": [
            _flag("btn", version=version),
            _flag("usr", unit="user", version=version),
            _flag("rev", reward="continuous", version=version),
            _flag("big", version=1000 + version),  # a version that is not a cached small int
        ],
    }


class _Server:
    """/v1/config (a config that can change) and /v1/events (bodies kept)."""

    def __init__(self) -> None:
        self.config = _config()
        self.bodies: list[dict[str, Any]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/config":
            return httpx.Response(200, json=self.config, headers={"ETag": f'"{self.config["revision"]}"'})
        self.bodies.append(json.loads(request.content))
        return httpx.Response(202, json={})


def _client(
    server: _Server, compiled: bool, monkeypatch: pytest.MonkeyPatch, background: bool = False, **kwargs: Any
) -> Client:
    """A ready client of ``server`` on the compiled path or the Python one; without threads unless
    ``background``."""
    with monkeypatch.context() as m:
        if compiled:
            m.delenv("BANDITFLAGS_NO_SPEEDUPS", raising=False)
        else:
            m.setenv("BANDITFLAGS_NO_SPEEDUPS", "1")
        client = Client(
            "http://bf.test",
            "bf_sdk_test",
            transport=httpx.MockTransport(server.handler),
            background=background,
            **kwargs,
        )
    ready = client.wait_until_ready(5.0) if background else client.refresh()
    assert ready and client.speedups is compiled
    return client


def test_every_client_runs_the_compiled_path_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    server = _Server()
    compiled, python = _client(server, True, monkeypatch), _client(server, False, monkeypatch)
    assert type(compiled.track) is speedups.Tracker and inspect.ismethod(python.track)
    # help() and inspect see the Python method's signature and documentation
    assert inspect.signature(compiled.track) == inspect.signature(python.track)
    assert compiled.track.__doc__ == Client.track.__doc__
    # the compiled path holds the client: a cycle, which the collector frees
    ref = weakref.ref(compiled)
    compiled.close(1.0)
    del compiled
    gc.collect()
    assert ref() is None
    python.close(1.0)


def test_a_subclass_that_overrides_track_keeps_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    class Counting(Client):
        def track(self, *args: Any, **kwargs: Any) -> bool:
            calls.append(args)
            return super().track(*args, **kwargs)

    monkeypatch.delenv("BANDITFLAGS_NO_SPEEDUPS", raising=False)
    server = _Server()
    client = Counting("http://bf.test", "bf_sdk_test", transport=httpx.MockTransport(server.handler))
    assert client.speedups is False
    assert client.track("btn", "someone") is True and calls == [("btn", "someone")]
    client.close(1.0)


def test_the_memories_keep_their_hashes_beside_their_keys() -> None:
    d, plain = keyed_dict(), {}
    assert d == {} and len(d) == 0
    for k in ("a", "b", "c"):
        d[k] = plain[k] = 1
    assert d == plain == {"a": 1, "b": 1, "c": 1}
    if sys.implementation.name == "cpython" and sys.version_info >= (3, 11):
        # From 3.11 a dict of str keys only keeps no hashes in its entries: 8 bytes less per entry.
        assert sys.getsizeof(d) > sys.getsizeof(plain)


# One call, applied to both clients: what the differential test draws.
_UNITS = [f"u{i}" for i in range(6)] + ["ü-ñ", "x" * 600]  # a non-ASCII id, and one too long to hash inline
_FLAGS = ["btn", "usr", "rev", "big", "nope"]
_OPS = st.one_of(
    st.tuples(st.just("decide"), st.sampled_from(_FLAGS), st.sampled_from(_UNITS)),
    st.tuples(st.just("variant"), st.sampled_from(_FLAGS), st.sampled_from(_UNITS)),
    st.tuples(st.just("by decision"), st.integers(0, 30)),
    st.tuples(st.just("by token"), st.integers(0, 30)),
    st.tuples(st.just("foreign token"), st.integers(0, 30)),
    st.tuples(st.just("by unit"), st.sampled_from(_FLAGS), st.sampled_from([*_UNITS, ""])),
    st.tuples(
        st.just("general"),
        st.sampled_from(_FLAGS),
        st.sampled_from(_UNITS),
        st.sampled_from([0.0, 1, 1.0, 2.5, float("nan")]),
        st.sampled_from([None, None, "errors"]),
    ),
    st.tuples(
        st.just("junk"), st.sampled_from([None, 7, "", "bf2:btn:1:0:zz", "bf2:btn:9:0:00000000000000aa"])
    ),
    st.tuples(st.just("new config"), st.integers(1, 3)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_OPS, max_size=60), max_queue=st.sampled_from([4, 100_000]))
def test_the_compiled_path_answers_and_records_what_the_python_one_does(
    monkeypatch: pytest.MonkeyPatch, ops: list[Any], max_queue: int
) -> None:
    """Both clients take the same calls (each its own decisions; tokens of a third client, as from
    another process): every answer is the same, and so are the stats, the exposures counted (decide()
    runs compiled too) and every reward row sent, with
    the ids that do not depend on the client (hashed from the unit, or the third client's) equal and
    the others matched by count. A small max_queue puts the conversion lists at half their cap, where
    the compiled path hands over to Python."""
    server = _Server()
    compiled, python = (
        _client(server, True, monkeypatch, max_queue=max_queue),
        _client(server, False, monkeypatch, max_queue=max_queue),
    )
    assert compiled._decider is not None and python._decider is None  # decide() compiled, or not
    foreign = _client(server, False, monkeypatch)
    pair = (compiled, python)
    decisions: tuple[list[Any], list[Any]] = ([], [])
    foreign_tokens: list[str] = []
    stable: set[str] = set()  # ids that are the same whichever client sends them
    for op in ops:
        kind = op[0]
        if kind == "new config":
            server.config = _config(version=op[1], revision=server.config["revision"] + 1)
            assert all(c.refresh() for c in (*pair, foreign))
            continue
        answers = []
        for side, client in enumerate(pair):
            if kind == "decide":
                d = client.decide(op[1], op[2])
                decisions[side].append(d)
                answers.append(
                    (type(d), d.variant, d.value, d.reason, d.version, d.arm, d.propensity, d.rule)
                )
            elif kind == "variant":
                answers.append(client.variant(op[1], op[2], "off"))
            elif kind in ("by decision", "by token"):
                mine = decisions[side]
                if not mine:
                    continue
                d = mine[op[1] % len(mine)]
                answers.append(client.track(d if kind == "by decision" else d.token))
            elif kind == "foreign token":
                if side == 0:
                    fd = foreign.decide(_FLAGS[op[1] % 4], _UNITS[op[1] % len(_UNITS)])
                    if fd.token:
                        foreign_tokens.append(fd.token)
                        stable.add(fd.token.rsplit(":", 1)[1])
                if foreign_tokens:
                    answers.append(client.track(foreign_tokens[-1]))
            elif kind == "by unit":
                answers.append(client.track(op[1], op[2]))
            elif kind == "general":
                answers.append(client.track(op[1], op[2], reward=op[3], metric=op[4]))
            else:
                answers.append(client.track(op[1]))  # type: ignore[arg-type]
        if len(answers) == 2:
            assert answers[0] == answers[1], (op, answers)
    for version in (1, 2, 3, 1001, 1002, 1003):
        for unit in _UNITS:
            stable.add(unit_did(f"salt-btn:{version}", unit))
            stable.add(unit_did(f"salt-big:{version}", unit))
    stats = []
    sent: list[Any] = []
    for client in pair:
        s = client.stats()
        stats.append((s.duplicates, s.rewards_rejected, s.decisions_dropped, s.unknown_flags))
        n = len(server.bodies)
        assert client.flush(5.0)
        rows = [
            (
                r["flag"],
                r["version"],
                r["arm"],
                r.get("rule"),
                r.get("metric"),
                r["count"],
                round(r["sum"], 9),
                sorted(i if i in stable else "*" for i in r.get("ids") or []),
            )
            for body in server.bodies[n:]
            for r in body["rewards"]
        ]
        exposures: dict[Any, int] = {}
        for body in server.bodies[n:]:
            for r in body["exposures"]:
                key = (r["flag"], r["version"], r["arm"], r.get("rule"))
                exposures[key] = exposures.get(key, 0) + r["count"]
        sent.append((_merge(rows), exposures))
        client.close(1.0)
    foreign.close(1.0)
    assert stats[0] == stats[1]
    assert sent[0] == sent[1]


def _merge(rows: list[Any]) -> dict[Any, Any]:
    """Rows of several batches summed per (flag, version, arm, rule, metric)."""
    out: dict[Any, Any] = {}
    for flag, version, arm, rule, metric, count, total, ids in rows:
        c, s, i = out.get((flag, version, arm, rule, metric), (0, 0.0, []))
        out[(flag, version, arm, rule, metric)] = (c + count, round(s + total, 6), sorted(i + ids))
    return out


@pytest.mark.parametrize("compiled", [True, False])
def test_threads_tracking_at_once_count_each_conversion_once(
    monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    """Four threads track the same 2,000 units by flag + unit (never served: bucketed and remembered
    on the first call) and the same 500 decisions by token, twice each: every conversion is answered
    True exactly once, every other call is a duplicate, and each id is sent once."""
    server = _Server()
    client = _client(server, compiled, monkeypatch)
    units = [f"t-{i}" for i in range(2000)]
    tokens = [client.decide("btn", f"d-{i}").token for i in range(500)]
    firsts = [0] * 4
    barrier = threading.Barrier(4)

    def run(k: int) -> None:
        barrier.wait()
        n = 0
        for _ in range(2):
            for u in units[k % 2 :: 2] + units[(k + 1) % 2 :: 2]:  # every unit, in two orders
                n += client.track("btn", u)
            for t in tokens[::-1] if k % 2 else tokens:
                n += client.track(t)
        firsts[k] = n

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(firsts) == len(units) + len(tokens)
    assert client.stats().duplicates == 4 * 2 * (len(units) + len(tokens)) - sum(firsts)
    assert client.flush(5.0)
    ids = [i for body in server.bodies for r in body["rewards"] for i in r["ids"]]
    assert len(ids) == len(set(ids)) == len(units) + len(tokens)
    client.close(1.0)


@pytest.mark.parametrize("compiled", [True, False])
def test_conversions_stay_exact_while_memories_rotate_and_the_worker_cuts(
    monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    """Small memories (a rotation every 32 credits) and a worker cutting the conversion lists every
    10 ms while three threads convert distinct units and decisions: every conversion is sent once,
    and nothing is counted twice, dropped or rejected."""
    server = _Server()
    client = _client(
        server, compiled, monkeypatch, background=True, flush_interval=0.01, decision_memory_size=64
    )
    per_thread = 3000
    tokens = [[client.decide("btn", f"d{k}-{i}").token for i in range(per_thread)] for k in range(3)]
    firsts = [0] * 3

    def run(k: int) -> None:
        n = 0
        for i in range(per_thread):
            n += client.track("btn", f"t{k}-{i}")
            n += client.track(tokens[k][i])
        firsts[k] = n

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(firsts) == 2 * 3 * per_thread
    assert client.flush(10.0)
    s = client.stats()
    assert (s.duplicates, s.decisions_dropped, s.rewards_rejected) == (0, 0, 0)
    ids = [i for body in server.bodies for r in body["rewards"] for i in r["ids"]]
    assert len(ids) == len(set(ids)) == 2 * 3 * per_thread
    client.close(1.0)


@pytest.mark.parametrize("compiled", [True, False])
def test_an_interrupt_in_the_memory_rotation_reaches_the_caller(
    monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    """The compiled path runs Python code only in Conversions.rotate: a KeyboardInterrupt raised there
    goes on up, as the Python method's ``except Exception`` lets it, instead of a rejected reward."""
    from banditflags._units import Conversions

    client = _client(_Server(), compiled, monkeypatch, decision_memory_size=64)

    def interrupted(self: Any, full: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Conversions, "rotate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        for i in range(64):  # half the memory fills within these: rotate() is called
            client.track("btn", f"u{i}")
    assert client.stats().rewards_rejected == 0
