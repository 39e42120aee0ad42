"""``GET /metrics`` over the real server, and the optional tracing of the server's own requests."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from banditflags import Client
from banditflags_server.service.metrics import __doc__ as METRICS_DOC

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
    from banditflags_server.records import EventBatch, EventRow, IngestResult
    from banditflags_server.service import metrics

    # A flag key cannot be like this over HTTP (the store ignores unknown flags); escaping must hold anyway.
    tag = uuid.uuid4().hex[:8]
    weird = f'we"ird\\\n{tag}'
    rows = [EventRow("exposures[0]", weird, 1, 0, 2)]
    metrics.record_ingest(
        EventBatch("b" * 8, rows, []), IngestResult("b" * 8, False), (None, None), {}, None, 0.0
    )
    text = metrics.render(None)[0].decode()
    assert parse(text)[f'banditflags_exposures_total{{flag="we\\"ird\\\\\\n{tag}",variant="0"}}'] == 2.0
    samples = [
        s for f in text_string_to_metric_families(text) for s in f.samples if s.labels.get("flag") == weird
    ]
    assert [(s.name, s.labels, s.value) for s in samples] == [
        ("banditflags_exposures_total", {"flag": weird, "variant": "0"}, 2.0)
    ]


def test_guardrail_metric_rows_are_not_objective_rewards() -> None:
    from banditflags_server.records import EventBatch, EventRow, IngestResult
    from banditflags_server.service import metrics

    flag = "gm-" + uuid.uuid4().hex[:8]
    rows = [
        EventRow("rewards[0]", flag, 1, 0, 3, is_reward=True, sum=2.0, sum_sq=2.0),
        EventRow("rewards[1]", flag, 1, 0, 5, is_reward=True, sum=900.0, sum_sq=1e5, metric="latency_ms"),
    ]
    metrics.record_ingest(
        EventBatch("c" * 8, [], rows), IngestResult("c" * 8, False), (None, None), {}, None, 0.0
    )
    m = parse(metrics.render(None)[0].decode())
    assert m[f'banditflags_rewards_total{{flag="{flag}",variant="0"}}'] == 3.0
    assert m[f'banditflags_reward_sum{{flag="{flag}",variant="0"}}'] == 2.0


#: The module docstring's table: metric (as exposed) -> (type, label names).
TABLE = {
    m.group(1): (m.group(3), tuple(m.group(2).split(",")) if m.group(2) else ())
    for m in re.finditer(
        r"^``(banditflags_[a-z_]+)(?:\{([a-z,]+)\})?``\s+(counter|gauge|histogram)\s", METRICS_DOC, re.M
    )
}


def exposed(families: list[Metric]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Sample name -> (family type, label names) as a parser saw the page; histograms by family name."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for family in families:
        for s in family.samples:
            if family.type == "histogram":
                assert s.name in {family.name + x for x in ("_bucket", "_sum", "_count")}, s.name
                assert set(s.labels) == ({"le"} if s.name.endswith("_bucket") else set()), s
                out[family.name] = ("histogram", ())
            else:
                assert s.name == family.name + ("_total" if family.type == "counter" else ""), s.name
                out.setdefault(s.name, (family.type, tuple(s.labels)))
                assert out[s.name] == (family.type, tuple(s.labels)), s
    return out


def test_the_page_parses_with_prometheus_client_and_matches_the_table(
    live_server: Callable[..., Any],
) -> None:
    """The real server over HTTP, read by prometheus-client's own parsers: every metric of the module's
    table and nothing else, with its type and labels; the same page as OpenMetrics when asked for it."""
    assert len(TABLE) == 25, TABLE
    server = live_server()
    with server.client("admin") as admin, server.client("sdk") as sdk:
        assert admin.post("/v1/flags", json=flag_body("btn")).status_code == 201
        revision = int(sdk.get("/v1/config").headers["etag"].strip('"'))
        assert (
            sdk.post("/v1/events", json=events("btn", config_revision=revision, config_age=3)).status_code
            == 202
        )
        # A conversion tracked twice with its decision id, and more conversions than exposures without.
        conversion = {"flag": "btn", "version": 1, "arm": 0, "count": 1, "sum": 1, "sum_sq": 1}
        for extra in ({"ids": ["00000000000000aa"]}, {"ids": ["00000000000000aa"]}, {"count": 9, "sum": 9}):
            body = {"batch_id": uuid.uuid4().hex, "rewards": [{**conversion, **extra}]}
            assert sdk.post("/v1/events", json=body).status_code == 202
        assert admin.post("/v1/flags/btn/recompute").status_code == 200
    r = httpx.get(server.url + "/metrics", timeout=10.0)
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = list(text_string_to_metric_families(r.text))
    assert exposed(families) == TABLE
    assert len({f.name for f in families}) == len(families)
    assert not [line for line in r.text.splitlines() if "_created" in line]
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    assert values[("banditflags_exposures_total", (("flag", "btn"), ("variant", "green")))] == 7
    assert values[("banditflags_sdk_config_age_seconds_bucket", (("le", "5.0"),))] == 1
    assert values[("banditflags_duplicate_conversions_total", (("flag", "btn"),))] == 1
    assert values[("banditflags_clamped_rewards", (("flag", "btn"),))] == 5  # 10 conversions, 5 exposures
    assert values[("banditflags_rewards_total", (("flag", "btn"), ("variant", "blue")))] == 10  # not 11

    om = httpx.get(
        server.url + "/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        timeout=10.0,
    )
    assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert om.text.endswith("# EOF\n")
    om_families = list(openmetrics_families(om.text))  # the strict parser: raises on any format error
    assert exposed(om_families) == TABLE
    om_values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in om_families for s in f.samples}
    same = {k for k in values if not k[0].startswith("banditflags_scrape_timestamp")}
    assert {k: om_values[k] for k in same} == {k: values[k] for k in same}


def test_new_label_sets_stop_at_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from banditflags_server.records import EventBatch, EventRow, IngestResult
    from banditflags_server.service import metrics

    tag = uuid.uuid4().hex[:8]
    monkeypatch.setattr(metrics, "MAX_SERIES", len(metrics._EXPOSURE_CHILDREN.by_labels) + 2)

    def ingest(*keys: str) -> None:
        rows = [EventRow(f"exposures[{i}]", f"{k}-{tag}", 1, 0, 1) for i, k in enumerate(keys)]
        metrics.record_ingest(
            EventBatch("b" * 8, rows, []), IngestResult("b" * 8, False), (None, None), {}, None, 0
        )

    ingest("a", "b", "c")  # c is one label set too many: not counted, and nothing else fails
    ingest("a", "c")
    page = parse(metrics.render(None)[0].decode())
    mine = {k: v for k, v in page.items() if tag in k}
    assert mine == {
        f'banditflags_exposures_total{{flag="a-{tag}",variant="0"}}': 2.0,
        f'banditflags_exposures_total{{flag="b-{tag}",variant="0"}}': 1.0,
    }


def test_workers_sharing_a_multiprocess_dir_add_up(live_server: Callable[..., Any], tmp_path: Path) -> None:
    """Two server processes on one database and one PROMETHEUS_MULTIPROC_DIR, as uvicorn workers would be:
    either one's page has both processes' counts (also after one has stopped), the flag gauges once."""
    mp = tmp_path / "prometheus"
    mp.mkdir()
    db, admin_key, sdk_key = str(tmp_path / "shared.db"), "bf_admin_" + "a" * 32, "bf_sdk_" + "s" * 32
    one, two = (
        live_server(db=db, env={"PROMETHEUS_MULTIPROC_DIR": str(mp)}, admin_key=admin_key, sdk_key=sdk_key)
        for _ in range(2)
    )
    with one.client("admin") as admin:
        assert admin.post("/v1/flags", json=flag_body("btn")).status_code == 201
    for server in (one, two):
        with server.client("sdk") as sdk:
            assert (
                sdk.post("/v1/events", json=events("btn", config_revision=0, config_age=1)).status_code == 202
            )
    assert {p.name.split("_")[0] for p in mp.glob("*.db")} == {"counter", "histogram", "gauge"}
    for server in (one, two):
        m = scrape(server.url)
        assert m['banditflags_exposures_total{flag="btn",variant="green"}'] == 14
        assert m['banditflags_reward_sum{flag="btn",variant="green"}'] == 4.0  # summed, no pid label
        assert m['banditflags_event_batches_total{result="accepted"}'] == 2
        assert m["banditflags_sdk_dropped_events_total"] == 8
        assert m["banditflags_ingest_duration_seconds_count"] == 2
        assert m['banditflags_sdk_config_age_seconds_bucket{le="1.0"}'] == 2
        assert m['banditflags_weight{flag="btn",variant="green"}'] == 0.75  # read from the database
    assert one.stop() == 0
    m = scrape(two.url)
    assert m['banditflags_exposures_total{flag="btn",variant="green"}'] == 14  # a stopped worker still counts


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


def test_batches_naming_an_unknown_flag_share_one_reload_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """An SDK still reporting a deleted flag from many connections: one reload of the variant names a
    second, not one per batch (that herd of reloads once held ingest's p99 above a second)."""
    from banditflags_server.service import metrics

    clock = [100.0]
    monkeypatch.setattr(metrics.time, "monotonic", lambda: clock[0])
    names = metrics.VariantNames()
    names.names = {"known": ["a", "b"]}
    assert not names.stale(["known"])
    answers = [names.stale(["known", "gone"]) for _ in range(128)]
    assert answers.count(True) == 1 and answers[0]
    clock[0] += 0.5
    assert not names.stale(["gone"])
    clock[0] += 0.6
    assert names.stale(["gone"]) and not names.stale(["gone"])
