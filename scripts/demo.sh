#!/usr/bin/env bash
# Sets up .venv if needed, then runs the demo: a coordinator, three workers, the WageAvg task.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py
