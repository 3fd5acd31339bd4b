#!/usr/bin/env bash
# Repository growth over a week of nightly 1% backups (issue 16): ours -BQ and
# -BQz with and without --prune-index, and ZODB 6.4's repozo -BQ / -BQz for
# reference; then recovery of a pruned date (ours rebuilds FILE.index; ZODB's
# repozo leaves ZODB to rebuild it on open).  Makes sure the ZODB 6.4 venv and
# the release binary exist, then runs scripts/bench_growth.py, e.g.
#   scripts/bench-growth.sh                        # 1M objects, 7 nights
#   scripts/bench-growth.sh --objects 20000 --txns 50   # a quick check
# The tables go to docs/bench-growth.md (--out FILE to change).  NO_BUILD=1
# skips `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release --quiet
fi
exec .venv/bin/python scripts/bench_growth.py "$@"
