#!/usr/bin/env bash
# Creates .venv and installs deltaflow with its test tools; a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
# PostgreSQL's server programs, for the tests of SQL sources (which start a throw-away server).
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 &&
   command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
        >/dev/null 2>&1 || echo "could not install postgresql; its tests will be skipped" >&2
fi
python=${PYTHON:-python3}
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
