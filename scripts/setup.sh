#!/usr/bin/env bash
# Creates .venv and installs deltaflow with its test tools, and Chromium for the browser test;
# a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
# PostgreSQL's server programs, for the tests of SQL sources (which start a throw-away server).
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 &&
   command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
        >/dev/null 2>&1 || echo "could not install postgresql; its tests will be skipped" >&2
fi
python=${PYTHON:-python3}
# The dashboard's browser test drives Debian's chromium: installed here where it is missing.
if ! command -v chromium > /dev/null 2>&1; then
    chromium_log=${TMPDIR:-/tmp}/deltaflow-chromium-install.log
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null 2>&1; then
        echo "installing chromium for the dashboard's browser test (apt-get's output: $chromium_log)" >&2
        if ! { apt-get update -qq &&
               DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
                > "$chromium_log" 2>&1; then
            echo "could not install chromium (see $chromium_log); tests/test_dashboard.py will fail until it is installed" >&2
        fi
    else
        echo "chromium is missing and this is not root with apt-get: install Debian's chromium (sudo apt-get install chromium) for tests/test_dashboard.py" >&2
    fi
fi
stamp=.venv/.deltaflow-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "setting up .venv (the first time takes a few minutes; pip's output: .venv/setup.log)" >&2
[ -x .venv/bin/python ] || "$python" -m venv .venv
if ! { .venv/bin/python -m pip install --upgrade pip &&
       .venv/bin/python -m pip install -e '.[dev]'; } > .venv/setup.log 2>&1; then
    tail -n 40 .venv/setup.log >&2
    echo "setup failed; the whole log is in .venv/setup.log" >&2
    exit 1
fi
echo "$want" > "$stamp"
