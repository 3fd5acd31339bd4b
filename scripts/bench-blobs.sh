#!/usr/bin/env bash
# Benchmark of blob directories (-B/-R --blob-dir) against ZODB 6.4's repozo
# plus rsync snapshots as collective.recipe.backup makes them: makes sure the
# ZODB 6.4 venv and the release binary exist, then runs
# scripts/bench_blobs.py with the given arguments, e.g.
#   scripts/bench-blobs.sh                          # 100,000 blobs (~5 GB), 3 runs
#   scripts/bench-blobs.sh --blobs 20000 --runs 3   # a quicker run
#   scripts/bench-blobs.sh --only nightly
# Needs rsync, and about 5x the blob bytes free under target/bench/.  The
# table goes to docs/bench-blobs.md (--out FILE to change).  NO_BUILD=1 skips
# `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release --quiet
fi
exec .venv/bin/python scripts/bench_blobs.py "$@"
