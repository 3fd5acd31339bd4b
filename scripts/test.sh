#!/usr/bin/env bash
# The whole test suite: installs ZODB 6.4 into .venv (from PyPI) for the
# integration tests, then runs the short fault-injection runs and every
# Rust test, then builds and tests the wheel and the Debian package.
# Usage: scripts/test.sh
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
# install and operate (issue 17): the wheel into a ZODB venv with
# collective.recipe.backup, and the Debian package with its units (root only)
scripts/test-wheel.sh
if [ "$(id -u)" = 0 ]; then
    scripts/test-deb.sh
else
    echo "scripts/test-deb.sh skipped: dpkg -i needs root"
fi
