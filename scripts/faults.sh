#!/usr/bin/env bash
# Fault injection (RELIABILITY.md T1, T3, T4, T5): makes sure the ZODB 6.4
# venv and the release binary exist, then runs scripts/faults.py with the
# given arguments, e.g.
#   scripts/faults.sh all --short        # CI subset (under a minute or two)
#   scripts/faults.sh kill-sweep         # SIGKILL before every mutating call, every scenario
#   scripts/faults.sh io-errors          # EIO/ENOSPC once and persistent, EINTR, short I/O
#   scripts/faults.sh enospc             # tmpfs too small .. big enough
#   scripts/faults.sh power-cuts --trials 300   # ext4 on loop + shutdown ioctl
#   scripts/faults.sh io-errors --scenario quick --only EIO:read:1 --keep   # one trial
# See `scripts/faults.sh --help`. x86_64 Linux; enospc and power-cuts need
# root (they print "skipped" otherwise); power-cuts installs xfsprogs if
# xfs_io is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
cargo build --release --quiet
exec .venv/bin/python scripts/faults.py "$@"
