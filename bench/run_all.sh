#!/usr/bin/env bash
# Runs the issue-4 benchmarks in their own environment, bench/.venv (made on first use: the project
# with its server extra, plus the peers from bench/requirements.txt: GrowthBook, Unleash, LaunchDarkly,
# OpenFeature, the OpenTelemetry SDK). The peers are never project dependencies. Every benchmark prints
# ratios measured in the same run. Results and how to read them: docs/performance.md.
#
#   bench/run_all.sh            # everything, ~3 minutes on the 2-core dev machine
#   QUICK=1 bench/run_all.sh    # fewer batches and 5 s load runs
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
VENV="$HERE/.venv"
PY="${PYTHON:-python3}"
stamp="$VENV/.bench-$(cat "$ROOT/pyproject.toml" "$HERE/requirements.txt" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "==> making $VENV" >&2
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q -e "$ROOT[server]" -r "$HERE/requirements.txt" >&2
    touch "$stamp"
fi
if ! command -v wrk >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing wrk (Debian package) for the server benchmark" >&2
    (apt-get install -y -q wrk || (apt-get update -q && apt-get install -y -q wrk)) >/dev/null 2>&1 || true
fi
B=300; S=10
if [ -n "${QUICK:-}" ]; then B=100; S=5; fi
P="$VENV/bin/python"
cd "$ROOT"
echo "## $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -m), $(nproc) cores, $("$P" -V)"
echo; echo "### bench_variant.py: variant() vs the floor"; "$P" bench/bench_variant.py --batches $((B * 5))
echo; echo "### bench_peers.py: variant() vs the peers"; "$P" bench/bench_peers.py --batches "$B"
echo; echo "### bench_targeting.py: a 5-rule flag vs the floor and the peers"; "$P" bench/bench_targeting.py --batches "$B"
echo; echo "### bench_trace.py: a decision in a recording trace vs a bare span"; "$P" bench/bench_trace.py --batches "$B"
echo; echo "### bench_track.py: track() and memory"; "$P" bench/bench_track.py --batches "$B"
echo; echo "### bench_server.py: the server under load vs a hello-world"; "$P" bench/bench_server.py --seconds "$S"
