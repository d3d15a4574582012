#!/usr/bin/env bash
# Sets up .venv if needed, then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The confinement tests run learning code as another OS user, who must be able to run this Python.
.venv/bin/python scripts/allow_task_user.py
# One test process per core, each test file in one of them (its module fixtures stay shared).
exec .venv/bin/python -m pytest -n auto --dist loadfile "$@"
