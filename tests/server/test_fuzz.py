"""The OpenAPI contract, fuzzed with schemathesis against the real server on loopback.

Every operation of the document (``GET /v1/stream`` excepted: it never ends; tests/stream covers it)
gets a bounded number of generated requests, valid and invalid, with the admin key and with the sdk
key. Each answer must be no 5xx, a documented status with a documented body, content type and headers,
and a rejected request (any 4xx) must change nothing: the database's flags, counts, batches, audit log
and sessions read the same before and after it. A stateful run follows the document's links (create a
flag, then read, change, recompute and delete it). bench/bench_fuzz.py is the long run of the same
test (docs/reliability.md has its figures).

The examples are derandomized: a failure here is a regression, replayed the same on every run
(``BF_FUZZ_EXAMPLES``, ``BF_FUZZ_STATEFUL`` and ``BF_FUZZ_SEED`` change that, for the long run).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks as oas_checks

from banditflags_server.api.openapi import document
from banditflags_server.api.schemas import FLAG_KEY
from banditflags_server.app import routes
from banditflags_server.settings import database_url
from banditflags_server.storage import schema as db

#: Examples per operation and key (bench/bench_fuzz.py raises it through the environment).
EXAMPLES = int(os.environ.get("BF_FUZZ_EXAMPLES", "100"))
STATEFUL_EXAMPLES = int(os.environ.get("BF_FUZZ_STATEFUL", "15"))
#: Unset: the same examples every run. bench/bench_fuzz.py --seed N explores others, reproducibly.
SEED = os.environ.get("BF_FUZZ_SEED")

SCHEMA = schemathesis.openapi.from_dict(document(routes)).exclude(operation_id="stream")
# The key is the test's to choose (both kinds, below): generated or mutated Authorization headers would be
# replaced anyway. tests/server/test_route_matrix.py checks every route without a key and with wrong ones.
SCHEMA.config.generation.update(with_security_parameters=False)
if SEED is not None:
    SCHEMA.config.seed = int(SEED)
# The stateful run follows the document's own links only. Links schemathesis infers would also take keys
# from GET /v1/flags, whose list grows from scenario to scenario: a replayed scenario would then get other
# flags and other answers, which hypothesis refuses as flaky.
SCHEMA.config.phases.stateful.inference.algorithms = []
# 422 is how the server refuses a body the schema cannot fully describe (a control that names no variant,
# fixed weights of the wrong length): valid by the schema, refused with the field named. What valid data
# must never get is a 400, 413 or 415 (the server misreading a well-formed request) or a 5xx. 412 is a
# PATCH whose (generated) If-Match names an ETag the flag does not have: its precondition, not its data.
SCHEMA.config.checks.positive_data_acceptance.expected_statuses = [
    "2xx",
    "3xx",
    "401",
    "403",
    "404",
    "409",
    "412",
    "422",
    "429",
]

CHECKS = [
    schemathesis.checks.not_a_server_error,
    oas_checks.status_code_conformance,
    oas_checks.content_type_conformance,
    oas_checks.response_headers_conformance,
    oas_checks.response_schema_conformance,
    oas_checks.negative_data_rejection,
    oas_checks.positive_data_acceptance,
]

SERIAL = itertools.count()
#: (operation, key kind, status) -> cases run, for the figures the long run prints.
CASES: collections.Counter[tuple[str, str, int]] = collections.Counter()


class Fuzzed:
    """The server under test, with what the checks need: its URL, keys and database."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.engine = sa.create_engine(database_url(server.db))

    def key(self, kind: str) -> str:
        return str(self.server.admin_key if kind == "admin" else self.server.sdk_key)

    def state(self) -> str:
        """A digest of what a request may change, without what the recompute loop changes by itself
        (versions, bandit weights, allocations): a flag created with ``recompute_interval: 1`` is
        recomputed in the background while the fuzzer runs."""
        f = db.flags.c
        owned = [f.key, f.description, f.salt, f.variants, f.control, f.objective, f.policy, f.state]
        owned += [f.exploration, f.baseline, f.recompute_interval, f.guardrails, f.created_at]
        queries = [
            sa.select(*owned).order_by(f.key),
            sa.select(db.arm_stats).order_by(*db.arm_stats.primary_key.columns),
            sa.select(db.metric_stats).order_by(*db.metric_stats.primary_key.columns),
            sa.select(db.batches.c.batch_id).order_by(db.batches.c.batch_id),
            sa.select(db.audit_log).order_by(db.audit_log.c.id),
            sa.select(db.api_keys).order_by(db.api_keys.c.name),
            sa.select(db.console_sessions.c.sid_sha256).order_by(db.console_sessions.c.sid_sha256),
        ]
        digest = hashlib.sha256()
        with self.engine.connect() as conn:
            for q in queries:
                for row in conn.execute(q):
                    digest.update(repr(tuple(row)).encode())
                digest.update(b"|")
        return digest.hexdigest()


@pytest.fixture(scope="module")
def fuzzed(module_server: Any) -> Iterator[Fuzzed]:
    yield Fuzzed(module_server)
    report = os.environ.get("BF_FUZZ_REPORT")
    if report:  # bench/bench_fuzz.py reads the counts
        counts = [
            {"operation": o, "key": k, "status": s, "cases": n} for (o, k, s), n in sorted(CASES.items())
        ]
        Path(report).write_text(json.dumps(counts, indent=1))
    # A 5xx the checks saw is a failure already; this catches an error the client never saw.
    assert "Traceback" not in module_server.log(), module_server.log()[-5000:]


def run_case(fuzzed: Fuzzed, case: Any, kind: str) -> None:
    """One generated request with the ``kind`` key: the checks, and nothing changed if it was refused."""
    headers = {"Authorization": f"Bearer {fuzzed.key(kind)}"}
    mutates = case.method.upper() in ("POST", "PATCH", "DELETE", "PUT")
    before = fuzzed.state() if mutates else None
    response = case.call(base_url=fuzzed.server.url, headers=headers, timeout=30)
    CASES[(case.operation.label, kind, response.status_code)] += 1
    case.validate_response(response, checks=CHECKS, headers=headers)
    if kind == "sdk" and case.operation.definition.raw.get("security") == [{"admin": []}]:
        assert response.status_code in (403, 405), f"an sdk key got {response.status_code}"
    if before is not None and 400 <= response.status_code < 500:
        assert fuzzed.state() == before, (
            f"{case.method} {case.formatted_path} was refused ({response.status_code}) but changed the "
            f"database:\n{case.as_curl_command(headers=headers)}"
        )


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=SEED is None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@SCHEMA.parametrize()
@_settings(EXAMPLES)
def test_the_admin_key(case: Any, fuzzed: Fuzzed) -> None:
    run_case(fuzzed, case, "admin")


@SCHEMA.exclude(tag="flags").parametrize()
@_settings(EXAMPLES)
def test_the_sdk_key(case: Any, fuzzed: Fuzzed) -> None:
    run_case(fuzzed, case, "sdk")


@SCHEMA.include(tag="flags").parametrize()
@_settings(max(1, EXAMPLES // 4))  # every one a 403: fewer show it as well
def test_the_sdk_key_on_admin_operations(case: Any, fuzzed: Fuzzed) -> None:
    run_case(fuzzed, case, "sdk")


def test_linked_operations_keep_the_contract(fuzzed: Fuzzed) -> None:
    """Create a flag, then what the document links to it (read, change, recompute, history, delete)."""
    headers = {"Authorization": f"Bearer {fuzzed.key('admin')}"}

    class Workflow(SCHEMA.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            # A scenario is replayed (hypothesis does, to shrink and to check) and must get the same
            # answers: it creates its flag again under a key of its own rather than find it taken, and
            # leaves the recompute interval at the server's hour, so the background loop (which would
            # race its recompute with a 409 now and then) never touches its flags.
            body = case.body
            if not isinstance(body, dict):
                return
            body.pop("recompute_interval", None)
            key = body.get("key") if case.path == "/v1/flags" else None
            if isinstance(key, str) and FLAG_KEY.fullmatch(key):
                body["key"] = f"{key[:50]}-{next(SERIAL)}"

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": fuzzed.server.url, "headers": headers, "timeout": 30}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            CASES[(case.operation.label, "stateful", response.status_code)] += 1
            case.validate_response(response, checks=CHECKS, headers=headers)

    Workflow.run(settings=settings(_settings(STATEFUL_EXAMPLES), stateful_step_count=6))
