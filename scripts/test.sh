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
# the S3-compatible store the -r s3:// tests run against (issue 18):
# Garage from crates.io, built once into ~/.cache/repozo-tools
scripts/garage.sh install >/dev/null
# unit, property and integration tests (the randomized suite included)
status=0
cargo test --quiet -- --test-threads="${REPOZO_TEST_THREADS:-2}" || status=$?
# the Garage servers the tests started
pkill -f "garage -c /tmp/repozo-garage-" 2>/dev/null || true
rm -rf /tmp/repozo-garage-*
[ "$status" = 0 ] || exit "$status"
# install and operate (issue 17): the wheel into a ZODB venv with
# collective.recipe.backup, and the Debian package with its units (root only)
scripts/test-wheel.sh
if [ "$(id -u)" = 0 ]; then
    scripts/test-deb.sh
else
    echo "scripts/test-deb.sh skipped: dpkg -i needs root"
fi
