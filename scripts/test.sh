#!/usr/bin/env bash
# The whole test suite: installs ZODB 6.4 into .venv (from PyPI) for the
# integration tests, then runs the short fault-injection runs and every
# Rust test. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
export REPOZO_PYTHON="$PWD/.venv/bin/python"
cargo build --quiet --all-targets
# fault injection, the short version (issue 6): SIGKILL, I/O errors, full
# disks; the long runs are `scripts/faults.sh all --power` (see README)
scripts/faults.sh all --short
# unit, property and integration tests (the randomized suite included)
cargo test --quiet -- --test-threads="${REPOZO_TEST_THREADS:-2}"
