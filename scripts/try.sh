#!/usr/bin/env bash
# Try repozo on the bundled sample: a full backup, an incremental backup
# after more transactions, a verification and a recovery. Usage: scripts/try.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin="$PWD/target/release/repozo"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp samples/Data.fs "$work/Data.fs"
mkdir "$work/backups"
cd "$work"
set -x
"$bin" -B -v -r backups -f Data.fs
cp "$OLDPWD/samples/Data-later.fs" Data.fs   # five more transactions committed
"$bin" -B -Q -v -r backups -f Data.fs
"$bin" -V -v -r backups
ls -l backups
cat backups/*.dat
"$bin" -R -v -r backups -o recovered.fs
cmp recovered.fs Data.fs
set +x
echo "recovered.fs is identical to Data.fs"
