#!/usr/bin/env bash
# The Debian package (issue 17): build it with cargo-deb (from crates.io,
# installed once into ~/.cargo/bin), install it with dpkg -i, check the
# systemd units with systemd-analyze verify (no running systemd needed),
# run each unit's command line by hand against a real Data.fs with a
# configuration in /etc/repozo, check the man page and completions are
# installed, then remove the package. Needs root (dpkg -i).
# Usage: scripts/test-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
if [ "$(id -u)" != 0 ]; then
    echo "test-deb.sh: needs root for dpkg -i" >&2
    exit 1
fi
# cargo-deb, built once without optimizations (a third of the time) into
# the same cache as Garage (scripts/garage.sh)
TOOLS="${REPOZO_TOOLS:-$HOME/.cache/repozo-tools}"
export PATH="$TOOLS/cargo-deb-3.8.0/bin:$PATH"
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install --quiet --locked --debug --root "$TOOLS/cargo-deb-3.8.0" cargo-deb@3.8.0
fi
if ! command -v systemd-analyze >/dev/null; then
    apt-get install -y -qq systemd >/dev/null
fi
# the release binary (already built by scripts/test-wheel.sh in a full run)
cargo build --quiet --release
cargo deb --quiet --no-build --output target/debian/
deb=$(ls -t target/debian/repozo_*.deb | head -1)
echo "built $deb"
dpkg-deb --contents "$deb" | awk '{print $6}'
name=ci$$
W=$(mktemp -d /tmp/repozo-deb.XXXXXX)
cleanup() {
    dpkg -r repozo >/dev/null 2>&1 || true
    rm -rf "$W" "/etc/repozo/$name.conf" "/var/backups/repozo/$name" \
        "/var/lib/repozo/repozo-backup-$name.prom" "/var/lib/repozo/repozo-check-$name.prom"
}
trap cleanup EXIT
dpkg -i "$deb" >/dev/null
test "$(/usr/bin/repozo --version)" = "repozo $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
test -f /usr/share/man/man1/repozo.1.gz
man -l /usr/share/man/man1/repozo.1.gz 2>/dev/null | grep -q -- "--prune-index"
test -f /usr/share/bash-completion/completions/repozo
test -f /usr/share/zsh/vendor-completions/_repozo

# the units, statically (templates are verified as instances)
systemd-analyze verify --man=no \
    "repozo-backup@$name.service" "repozo-backup@$name.timer" \
    "repozo-check@$name.service" "repozo-check@$name.timer"
# the network drop-in for s3:// repositories, applied to an instance
test -f /usr/share/doc/repozo/examples/s3-network.conf
mkdir -p "/etc/systemd/system/repozo-backup@$name.service.d"
cp /usr/share/doc/repozo/examples/s3-network.conf "/etc/systemd/system/repozo-backup@$name.service.d/"
systemd-analyze verify --man=no "repozo-backup@$name.service"
rm -r "/etc/systemd/system/repozo-backup@$name.service.d"
# hardening as documented
grep -q '^ProtectSystem=strict' /lib/systemd/system/repozo-backup@.service
grep -q '^ReadWritePaths=-/var/backups/repozo/%i' /lib/systemd/system/repozo-backup@.service
grep -q '^NoNewPrivileges=yes' /lib/systemd/system/repozo-check@.service
if grep -q '^ReadWritePaths' /lib/systemd/system/repozo-check@.service; then
    echo "the check unit must not write to the repository" >&2
    exit 1
fi

# each unit's command line, by hand, with a configuration in /etc/repozo
mkdir -p /etc/repozo "/var/backups/repozo/$name" /var/lib/repozo
.venv/bin/python tests/py/zodbtool.py create "$W/Data.fs" --seed 7 --txns 20 >/dev/null
.venv/bin/python tests/py/blobtool.py write "$W/Data.fs" "$W/blobs" --seed 7 --txns 5 >/dev/null
cat > "/etc/repozo/$name.conf" <<CONF
SOURCE=$W/Data.fs
BLOB_DIR=$W/blobs
KEEP=2
BACKUP_FLAGS="-Q -z --prune-index"
CONF
cmdline() { sed -n 's/^ExecStart=//p' "/lib/systemd/system/$1@.service" | sed "s/%i/$name/g"; }
$(cmdline repozo-backup)
.venv/bin/python tests/py/blobtool.py write "$W/Data.fs" "$W/blobs" --seed 8 --txns 3 >/dev/null
sleep 1
# as the units do (UMask=0077): the metrics stay readable by node_exporter
(umask 077; $(cmdline repozo-backup))
(umask 077; $(cmdline repozo-check))
test "$(stat -c %a "/var/lib/repozo/repozo-backup-$name.prom")" = 644
test "$(stat -c %a "/var/lib/repozo/repozo-check-$name.prom")" = 644
ls -la "/var/backups/repozo/$name"
grep -q "repozo_last_run_success{repository=\"/var/backups/repozo/$name\",mode=\"backup\"} 1" \
    "/var/lib/repozo/repozo-backup-$name.prom"
grep -q "repozo_last_run_success{repository=\"/var/backups/repozo/$name\",mode=\"verify\"} 1" \
    "/var/lib/repozo/repozo-check-$name.prom"
# what the nightly unit wrote recovers the source, blobs included
mkdir -p "$W/out"
/usr/bin/repozo -R -r "/var/backups/repozo/$name" -o "$W/out/Data.fs" --blob-dir "$W/out/blobs"
cmp "$W/Data.fs" "$W/out/Data.fs"
.venv/bin/python tests/py/blobtool.py dump "$W/out/Data.fs" "$W/out/blobs" > "$W/out.dump"
.venv/bin/python tests/py/blobtool.py dump "$W/Data.fs" "$W/blobs" > "$W/src.dump"
cmp "$W/src.dump" "$W/out.dump"
# a broken configuration: one clear line, exit 1
echo 'SOURCE=' > "/etc/repozo/$name.conf"
if /usr/lib/repozo/repozo-unit backup "$name" 2>"$W/err"; then
    echo "a configuration without SOURCE must fail" >&2
    exit 1
fi
grep -q "sets no SOURCE" "$W/err"
echo "deb OK: dpkg -i, systemd-analyze verify, backup and check units by hand, recovery"
