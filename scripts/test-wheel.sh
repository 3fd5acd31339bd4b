#!/usr/bin/env bash
# The wheel (issue 17): build it from source with maturin (from PyPI),
# install it into a fresh venv holding ZODB 6.4 and collective.recipe.backup
# 6.0, check that <venv>/bin/repozo is ours, run the recipe's backup,
# snapshot and restore functions against a real Data.fs
# (tests/py/recipe.py), then install the same wheel with pipx.
# Usage: scripts/test-wheel.sh   (leaves the wheel in target/wheels/)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
W=target/wheel-test
mkdir -p "$W"
# the build tools, cached between runs
if ! target/maturin-venv/bin/maturin --version >/dev/null 2>&1; then
    "$PYTHON" -m venv target/maturin-venv
    target/maturin-venv/bin/pip install --quiet --disable-pip-version-check maturin==1.15.0 pipx==1.8.0
fi
rm -rf target/wheels
target/maturin-venv/bin/maturin build --quiet --release --out target/wheels
wheel=$(ls target/wheels/repozo_rs-*.whl)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
echo "built $wheel"

# a site's virtualenv: ZODB (with its own bin/repozo) and the recipe first,
# then our wheel, which takes bin/repozo over
rm -rf "$W/venv" "$W/work"
"$PYTHON" -m venv "$W/venv"
"$W/venv/bin/pip" install --quiet --disable-pip-version-check ZODB==6.4 collective.recipe.backup==6.0.0
grep -q "ZODB.scripts.repozo" "$W/venv/bin/repozo"   # ZODB's script, before
"$W/venv/bin/pip" install --quiet --disable-pip-version-check "$wheel"
test "$("$W/venv/bin/repozo" --version)" = "repozo $version"
"$W/venv/bin/python" tests/py/recipe.py "$PWD/$W/venv/bin" "$PWD/$W/work"

# switching back, as the README says
"$W/venv/bin/pip" uninstall --quiet --yes repozo-rs
"$W/venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps ZODB==6.4
grep -q "ZODB.scripts.repozo" "$W/venv/bin/repozo"

# pipx: a tool of its own
rm -rf "$W/pipx"
PIPX_HOME="$PWD/$W/pipx/home" PIPX_BIN_DIR="$PWD/$W/pipx/bin" PIPX_MAN_DIR="$PWD/$W/pipx/man" \
    target/maturin-venv/bin/pipx install --quiet "$wheel"
test "$("$W/pipx/bin/repozo" --version)" = "repozo $version"
echo "wheel OK: pip into a ZODB venv (recipe backup/snapshot/restore), switch back, pipx"
