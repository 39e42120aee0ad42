"""``GET /metrics`` over the real server, and the optional tracing of the server's own requests."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from banditflags import Client

SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? '
    r"(-?[0-9.e+-]+|[+-]Inf|NaN)$"
)


def parse(text: str) -> dict[str, float]:
    """Every sample as ``'name{labels}' -> value``; asserts the text format line by line."""
    assert text.endswith("\n")
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            assert name not in typed, f"{name} typed twice"
            typed.add(name)
            continue
        m = SAMPLE.match(line)
        assert m is not None, f"not a sample line: {line!r}"
        family = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        assert m.group(1) in typed or family in typed, f"{line!r} has no TYPE"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def flag_body(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "variants": ["blue", "green"],
        "control": "blue",
        "policy": {"name": "fixed", "weights": [0.25, 0.75]},
    }


def events(key: str, **extra: Any) -> dict[str, Any]:
    return {
        "batch_id": uuid.uuid4().hex,
        "sdk": "test",
        "exposures": [
            {"flag": key, "version": 1, "arm": 0, "count": 5},
            {"flag": key, "version": 1, "arm": 1, "count": 7},
        ],
        "rewards": [{"flag": key, "version": 1, "arm": 1, "count": 3, "sum": 2.0, "sum_sq": 2.0}],
        "dropped": 4,
        **extra,
    }


def scrape(url: str) -> dict[str, float]:
    r = httpx.get(url + "/metrics", timeout=10.0)  # no key
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(r.text)


def test_metrics_over_http(live_server: Callable[..., Any]) -> None:
    server = live_server()
    with server.client("admin") as admin, server.client("sdk") as sdk:
        assert admin.post("/v1/flags", json=flag_body("btn")).status_code == 201
        before = scrape(server.url)
        assert before['banditflags_weight{flag="btn",variant="blue"}'] == 0.25
        assert before['banditflags_weight{flag="btn",variant="green"}'] == 0.75
        assert before['banditflags_allocation_version{flag="btn"}'] == 1
        assert before['banditflags_flag_state{flag="btn",state="running"}'] == 1
        assert before["banditflags_ingest_duration_seconds_count"] == 0
        revision = int(sdk.get("/v1/config").headers["etag"].strip('"'))

        body = events("btn", config_revision=revision, config_age=12.5)
        assert sdk.post("/v1/events", json=body).status_code == 202
        assert sdk.post("/v1/events", json=body).json()["duplicate"] is True  # a retry counts nothing
        bad = sdk.post("/v1/events", json=events("btn", config_age=-1))
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "config_age"
        bad = sdk.post("/v1/events", json=events("btn", config_revision="7"))
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "config_revision"

        m = scrape(server.url)
        assert m['banditflags_exposures_total{flag="btn",variant="blue"}'] == 5
        assert m['banditflags_exposures_total{flag="btn",variant="green"}'] == 7
        assert m['banditflags_rewards_total{flag="btn",variant="green"}'] == 3
        assert m['banditflags_reward_sum{flag="btn",variant="green"}'] == 2.0
        assert m['banditflags_event_batches_total{result="accepted"}'] == 1
        assert m['banditflags_event_batches_total{result="duplicate"}'] == 1
        assert m["banditflags_sdk_dropped_events_total"] == 4
        assert m["banditflags_ingest_duration_seconds_count"] == 2
        assert m['banditflags_ingest_duration_seconds_bucket{le="+Inf"}'] == 2
        assert m["banditflags_sdk_config_age_seconds_count"] == 1
        assert m["banditflags_sdk_config_age_seconds_sum"] == 12.5
        assert m['banditflags_sdk_config_age_seconds_bucket{le="10.0"}'] == 0
        assert m['banditflags_sdk_config_age_seconds_bucket{le="30.0"}'] == 1
        assert m['banditflags_sdk_config_revisions_behind_bucket{le="0.0"}'] == 1
        assert m["banditflags_config_revision"] == revision

        # operator changes show up in the gauges at the next scrape
        assert admin.patch("/v1/flags/btn", json={"state": "killed", "exploration": 0.5}).status_code == 200
        m = scrape(server.url)
        assert m['banditflags_flag_state{flag="btn",state="killed"}'] == 1
        assert m['banditflags_flag_exploration{flag="btn"}'] == 0.5
        assert 'banditflags_flag_state{flag="btn",state="running"}' not in m


def test_recompute_durations_and_sdk_staleness(live_server: Callable[..., Any]) -> None:
    server = live_server(recompute_interval=1)
    with server.client("admin") as admin:
        body = flag_body("learn")
        body["policy"] = {"name": "thompson", "burn_in": 0}
        assert admin.post("/v1/flags", json=body).status_code == 201
    with Client(server.url, server.sdk_key, flush_interval=0.2) as client:
        assert client.wait_until_ready(10.0)
        for i in range(50):
            d = client.decide("learn", f"u{i}")
            client.track(d, reward=1 if d.variant == "green" else 0)
        assert client.flush(10.0)
    deadline = time.monotonic() + 20
    m = scrape(server.url)
    while m["banditflags_recompute_duration_seconds_count"] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
        m = scrape(server.url)
    assert m["banditflags_recompute_duration_seconds_count"] >= 1
    assert m['banditflags_recomputed_flags_total{result="written"}'] >= 1
    # the real SDK reports its config revision and age with every batch
    assert m["banditflags_sdk_config_age_seconds_count"] >= 1
    assert m["banditflags_sdk_config_age_seconds_sum"] < 60
    exposures = sum(v for k, v in m.items() if k.startswith('banditflags_exposures_total{flag="learn"'))
    assert exposures == 50


def test_label_values_are_escaped() -> None:
    from banditflags_server.service.metrics import Counter

    c = Counter("x_total", "Help.", ("flag",))
    c.inc(2, ('we"ird\\\n',))
    assert parse("\n".join(c.render()) + "\n") == {'x_total{flag="we\\"ird\\\\\\n"}': 2.0}


def test_server_traces_its_requests_when_asked(live_server: Callable[..., Any]) -> None:
    server = live_server(env={"BANDITFLAGS_OTEL_TRACES": "console"})
    trace_id = uuid.uuid4().hex
    parent = "00f067aa0ba902b7"
    with server.client("sdk") as sdk:
        r = sdk.get("/v1/config", headers={"traceparent": f"00-{trace_id}-{parent}-01"})
        assert r.status_code == 200
    deadline = time.monotonic() + 10
    while f"0x{trace_id}" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log()
    start = log.index("{", log.rindex('"name": "GET /v1/config"') - 20)
    span, _ = json.JSONDecoder().raw_decode(log, start)
    assert span["context"]["trace_id"] == f"0x{trace_id}" and span["parent_id"] == f"0x{parent}"
    assert span["kind"] == "SpanKind.SERVER"
    assert span["attributes"] == {
        "http.request.method": "GET",
        "url.path": "/v1/config",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "http.route": "/v1/config",
    }
    assert span["resource"]["attributes"]["service.name"] == "banditflags-server"
    assert server.sdk_key not in log


def test_no_tracing_by_default_and_bad_setting_is_an_error() -> None:
    from banditflags_server.api import otel

    assert otel.middleware({}) == []
    with pytest.raises(ValueError, match="BANDITFLAGS_OTEL_TRACES"):
        otel.middleware({"BANDITFLAGS_OTEL_TRACES": "jaeger"})
