#!/usr/bin/env bash
# Benchmark of every mode against ZODB 6.4's repozo: makes sure the ZODB 6.4
# venv and the release binary exist, then runs scripts/bench.py with the
# given arguments, e.g.
#   scripts/bench.sh                          # small (1M objects), 3 runs
#   scripts/bench.sh --only full,bq-live --runs 5
#   scripts/bench.sh --size large             # multi-GB; takes a while
# The table goes to docs/bench.md (--out FILE to change).  NO_BUILD=1 skips
# `cargo build --release` (e.g. with --ours pointing at a saved binary).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release --quiet
fi
exec .venv/bin/python scripts/bench.py "$@"
