#!/usr/bin/env bash
# Benchmark of -BQ (and full backups) against ZODB's repozo: makes sure the
# release binary and the ZODB 6.4 venv exist, then runs scripts/bench_quick.py
# with the given arguments, e.g. scripts/bench_quick.sh --objects 100000 --runs 1
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
cargo build --release --quiet
exec .venv/bin/python scripts/bench_quick.py "$@"
