#!/usr/bin/env bash
# Benchmark of -BQ (and full backups) against ZODB's repozo: makes sure the
# release binary and the ZODB 6.4 venv exist, then runs scripts/bench_quick.py
# with the given arguments, e.g. scripts/bench_quick.sh --objects 100000 --runs 1
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! .venv/bin/python -c 'import ZODB, sys; from importlib.metadata import version; sys.exit(version("ZODB") != "6.4")' 2>/dev/null; then
    "$PYTHON" -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/py/requirements.txt
fi
cargo build --release --quiet
exec .venv/bin/python scripts/bench_quick.py "$@"
