#!/usr/bin/env bash
# Benchmark of `-r s3://` (issue 18): full backup, nightly -BQ and recovery
# straight to / from a local Garage, against a local backup plus
# `rclone copy` (and ZODB's repozo plus rclone for reference).  Makes sure
# the venv (ZODB 6.4, rclone) and the release binary exist, starts a Garage
# in a temporary directory (scripts/garage.sh; GARAGE_BIN=PATH for another
# garage binary, e.g. a release build), runs scripts/bench_s3.py with the
# given arguments and stops the server, e.g.
#   scripts/bench-s3.sh                         # Plone-like 205 MB, 3 runs
#   GARAGE_BIN=/path/to/garage scripts/bench-s3.sh --size large --runs 1
# Writes its section of docs/bench-s3.md (--out FILE to change).  NO_BUILD=1
# skips `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release --quiet
fi
mkdir -p target/bench
GARAGE_DIR=$(mktemp -d "$PWD/target/bench/s3-garage.XXXXXX")
trap 'scripts/garage.sh stop "$GARAGE_DIR"; rm -rf "$GARAGE_DIR"' EXIT
scripts/garage.sh start "$GARAGE_DIR" > /dev/null
. "$GARAGE_DIR/env"
.venv/bin/python scripts/bench_s3.py "$@"
