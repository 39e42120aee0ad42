# Shared by scripts/demo and scripts/test: make (or reuse) the project's virtualenv and install the
# project into it with the given extras. Re-installs only when what it installs from changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BANDITFLAGS_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

bf_install() {
    local extras="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating virtualenv $VENV" >&2
        "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    fi
    # pyproject.toml and setup.py say what to install; the C source is compiled by that install.
    local stamp="$VENV/.banditflags-$extras-$(cat "$ROOT/pyproject.toml" "$ROOT/setup.py" \
        "$ROOT/sdk/banditflags/_speedups.c" | sha256sum | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        echo "==> installing banditflags[$extras] into $VENV (log: $VENV/pip-install.log)" >&2
        if ! "$VENV/bin/python" -m pip install -e "$ROOT[$extras]" > "$VENV/pip-install.log" 2>&1; then
            tail -n 40 "$VENV/pip-install.log" >&2
            echo "pip install failed; the whole log is $VENV/pip-install.log" >&2
            exit 1
        fi
        touch "$stamp"
    fi
}

# The console's browser tests need Debian's Chromium. Installing a system package is opt-in
# (BANDITFLAGS_INSTALL_BROWSER=1, or scripts/test --install-browser); without it, the tests skip.
bf_browser() {
    local chromium="${BF_CHROMIUM:-/usr/bin/chromium}"  # BF_CHROMIUM: for tests of this function
    [ -x "$chromium" ] && return 0
    if [ "${BANDITFLAGS_INSTALL_BROWSER:-0}" != 1 ]; then
        echo "==> $chromium is missing: the console's browser tests will be skipped" \
             "(--install-browser installs Debian's chromium with apt-get, as root)" >&2
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing Debian's chromium for the console's browser tests (--install-browser)" >&2
        (apt-get update -q && apt-get install -y -q chromium) >&2
    else
        echo "==> --install-browser needs root and apt-get; the browser tests will be skipped" >&2
    fi
}
