#!/usr/bin/env bash
# `-r s3://` against a three-node Garage cluster (replication factor 3, one
# node per zone, scripts/garage-cluster.sh) where a node is SIGKILLed in the
# middle of a backup or a recovery: each run must either succeed with the
# right bytes or fail cleanly (exit non-zero, one line on stderr), and leave
# every earlier backup recoverable.
#
#   scripts/test-s3-cluster.sh
#
# One PASS/FAIL line per scenario; exit 1 if any failed.
#   baseline  full backup, -V, -R, incremental, with every node up (timings)
#   a         full backup, node 2 (not the endpoint) killed mid-upload
#   b         incremental backup, node 2 killed mid-upload
#   c         recovery (-R -o), node 2 killed mid-download
#   d         full backup (-F), node 1 (the endpoint) killed mid-upload
#   e         recovery, node 1 (the endpoint) killed mid-download
#   final     every prefix verifies and recovers with every node up
# After each kill the node is restarted and the repository used again
# (a backup with every node up must work: nothing left wedged).
#
# Environment: REPOZO_BIN (default: target/release/repozo, built now), REPOZO_PYTHON (ZODB, default .venv/bin/python or
# /work/main/.venv/bin/python), REPOZO_CLUSTER_MB (size of Data.fs, 300),
# REPOZO_CLUSTER_SEED (the kill points; printed), KEEP=1 keeps the work
# directory and leaves the cluster running.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER="$ROOT/scripts/garage-cluster.sh"
# shellcheck source=scripts/s3mini.sh
. "$ROOT/scripts/s3mini.sh"
if [ -n "${REPOZO_BIN:-}" ]; then
    BIN=$REPOZO_BIN
else
    (cd "$ROOT" && cargo build --release --quiet)
    BIN="$ROOT/target/release/repozo"
fi
# ZODB, awscli
(cd "$ROOT" && . scripts/venv.sh)
if [ -n "${REPOZO_PYTHON:-}" ]; then
    PY=$REPOZO_PYTHON
elif [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
else
    PY=/work/main/.venv/bin/python
fi
MB=${REPOZO_CLUSTER_MB:-300}
SEED=${REPOZO_CLUSTER_SEED:-$(date +%s)}
RANDOM=$SEED
WORK=$(mktemp -d /tmp/repozo-cluster.XXXXXX)
C="$WORK/cluster"
FS="$WORK/Data.fs"
FAILS=0

cleanup() {
    if [ "${KEEP:-}" = 1 ]; then
        echo "kept $WORK (cluster running: scripts/garage-cluster.sh stop $C)"
    else
        "$CLUSTER" stop "$C" 2> /dev/null || true
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

pass() {
    echo "PASS $1: $2"
}
fail() {
    echo "FAIL $1: $2"
    FAILS=$((FAILS + 1))
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
md5() { md5sum "$1" | cut -d' ' -f1; }
one_line() { [ "$(grep -c . "$1")" -eq 1 ]; }

# Data.fs: transactions of 8 objects of 1 MiB of random bytes each (a real
# FileStorage, written by ZODB), MB megabytes more each call
grow_db() {
    "$PY" - "$FS" "$1" <<'EOF'
import os, sys, transaction, ZODB
from ZODB.FileStorage import FileStorage
from persistent.mapping import PersistentMapping
path, mb = sys.argv[1], int(sys.argv[2])
db = ZODB.DB(FileStorage(path))
conn = db.open()
root = conn.root()
n = len(root)
for t in range(max(1, mb // 8)):
    for i in range(8):
        root["o%d" % (n + 8 * t + i)] = PersistentMapping(data=os.urandom(1 << 20))
    transaction.commit()
db.close()
EOF
    rm -f "$FS.index" "$FS.lock" "$FS.tmp"
}

# env of the cluster (endpoint node 1) for every repozo and aws call
run() { # run NAME ARGS...: repozo ARGS, output in $WORK/NAME.out/.err; returns its status
    local name=$1
    shift
    (
        # shellcheck disable=SC1091
        . "$C/env"
        echo "$name" > "$WORK/pid.$BASHPID"
        exec "$BIN" "$@"
    ) > "$WORK/$name.out" 2> "$WORK/$name.err"
}

# the lock objects under a prefix (.repozo-locks/HOST-PID-RANDOM), each
# with the run that wrote it; with `real`, only those a GET finds (after a
# node missed a DELETE, Garage lists the deleted object for a while)
show_locks() {
    local size key pid state
    while read -r size key; do
        pid=${key##*/}
        pid=${pid%-*}
        pid=${pid##*-}
        if (
            # shellcheck disable=SC1091
            . "$C/env"
            s3mini get repozo "$key" /dev/null
        ) > /dev/null 2>&1; then
            state=present
        elif [ "${2:-}" = real ]; then
            continue
        else
            state="listed but GET 404: deleted"
        fi
        echo "     lock object: $key (${size} bytes, by $(cat "$WORK/pid.$pid" 2> /dev/null || echo "pid $pid"); $state)"
    done < <(objects "$1/.repozo-locks")
}

objects() { # the raw listing of a prefix: "SIZE KEY" lines
    (
        # shellcheck disable=SC1091
        . "$C/env"
        s3mini ls repozo "$1/"
    )
}

# run_killing NAME NODE EXPECTED ARGS...: repozo ARGS in the background,
# node NODE SIGKILLed at a random point in 10-60% of EXPECTED seconds.
# Sets RC, KILL_AT (seconds after start, empty if the run had ended
# before), AFTER (seconds from the kill to the end of the run).
run_killing() {
    local name=$1 node=$2 expected=$3
    shift 3
    local at pct t0 pid
    pct=$((10 + RANDOM % 51))
    at=$(awk -v t="$expected" -v p="$pct" 'BEGIN { printf "%.2f", t * p / 100 }')
    t0=$(now)
    run "$name" "$@" &
    pid=$!
    sleep "$at"
    KILL_AT=
    if kill -0 "$pid" 2> /dev/null; then
        "$CLUSTER" kill "$C" "$node"
        KILL_AT=$(elapsed "$t0")
    else
        "$CLUSTER" kill "$C" "$node"
    fi
    local tk
    tk=$(now)
    RC=0
    wait "$pid" || RC=$?
    AFTER=$(elapsed "$tk")
}

restart() {
    local t0
    t0=$(now)
    if "$CLUSTER" restart "$C" "$1" > "$WORK/restart.log" 2>&1; then
        echo "     node $1 back in $(elapsed "$t0") s"
    else
        fail "restart" "node $1 did not come back: $(tail -3 "$WORK/restart.log")"
        exit 1
    fi
}

# check_recovers NAME PREFIX MD5: -V passes and -R gives MD5; prints why not
check_recovers() {
    local name=$1 prefix=$2 want=$3
    rm -f "$WORK/$name.fs"
    if ! run "$name-V" -V -r "s3://repozo/$prefix"; then
        echo "-V failed: $(head -1 "$WORK/$name-V.err")"
        return 1
    fi
    if ! run "$name-R" -R -r "s3://repozo/$prefix" -o "$WORK/$name.fs"; then
        echo "-R failed: $(head -1 "$WORK/$name-R.err")"
        return 1
    fi
    local got
    got=$(md5 "$WORK/$name.fs")
    rm -f "$WORK/$name.fs" "$WORK/$name.fs.index"
    if [ "$got" != "$want" ]; then
        echo "-R gave md5 $got, expected $want"
        return 1
    fi
}

# check_new_objects BEFORE AFTER OFFSET LEN: every data file that appeared
# (.fs/.deltafs) holds exactly bytes OFFSET..OFFSET+LEN of Data.fs (no
# partial data file visible); prints the new objects
check_new_objects() {
    local before=$1 after=$2 off=$3 len=$4 bad=0 key size
    local want
    want=$("$PY" -c '
import hashlib, sys
h = hashlib.md5()
with open(sys.argv[1], "rb") as f:
    f.seek(int(sys.argv[2])); n = int(sys.argv[3])
    while n:
        b = f.read(min(n, 1 << 20)); h.update(b); n -= len(b)
print(h.hexdigest())' "$FS" "$off" "$len")
    while read -r size key; do
        echo "     new object: $key ($size bytes)"
        case "$key" in
        *.fs | *.deltafs)
            (
                # shellcheck disable=SC1091
                . "$C/env"
                s3mini get repozo "$key" "$WORK/obj"
            )
            if [ "$(md5 "$WORK/obj")" != "$want" ]; then
                echo "     ^ a partial or wrong data file is visible"
                bad=1
            fi
            rm -f "$WORK/obj"
            ;;
        esac
    done < <(comm -13 <(sort "$before") <(sort "$after") | grep -v "/.repozo-locks/")
    return "$bad"
}

describe() { # the run's outcome, for the PASS/FAIL line
    if [ -n "$KILL_AT" ]; then
        echo "killed at ${KILL_AT}s, exit $RC ${AFTER}s later"
    else
        echo "(the run had ended before the kill point) exit $RC"
    fi
}

"$CLUSTER" start "$C" > /dev/null
echo "repozo: $BIN; Garage cluster: $C; seed $SEED"
t0=$(now)
grow_db "$MB"
S1=$(md5 "$FS")
echo "     Data.fs: $(stat -c %s "$FS") bytes in $(elapsed "$t0") s"

# ---- cluster: with node 2 down, a PUT through node 1 and a GET through
# node 3 of the same object, and -L of an empty prefix, work
head -c 20000000 /dev/urandom > "$WORK/rand"
"$CLUSTER" kill "$C" 2
t0=$(now)
if (. "$C/env1" && s3mini put repozo probe/rand "$WORK/rand") > "$WORK/probe.err" 2>&1 &&
    (. "$C/env3" && s3mini get repozo probe/rand "$WORK/rand2") >> "$WORK/probe.err" 2>&1 &&
    cmp -s "$WORK/rand" "$WORK/rand2" &&
    run probe-L -L -r s3://repozo/x && grep -q "no backups" "$WORK/probe-L.out"; then
    pass cluster "node 2 down: 20 MB PUT via node 1, GET via node 3, -L 'no backups' ($(elapsed "$t0")s)"
else
    fail cluster "node 2 down: $(cat "$WORK/probe.err" "$WORK/probe-L.err" 2> /dev/null | head -2)"
fi
rm -f "$WORK/rand" "$WORK/rand2"
restart 2

# ---- baseline: every node up; the timings that place the kills
t0=$(now)
if run base-B -B -r s3://repozo/baseline -f "$FS"; then
    T_B=$(elapsed "$t0")
    if why=$(check_recovers base baseline "$S1"); then
        t0=$(now)
        run base-R2 -R -r s3://repozo/baseline -o "$WORK/timing.fs"
        T_R=$(elapsed "$t0")
        rm -f "$WORK/timing.fs" "$WORK/timing.fs.index"
        pass baseline "full backup ${T_B}s, recovery ${T_R}s, -V and md5 right"
    else
        fail baseline "$why"
        exit 1
    fi
else
    fail baseline "-B with every node up: $(head -1 "$WORK/base-B.err")"
    exit 1
fi

# ---- a: full backup, node 2 killed mid-upload
objects clusterA > "$WORK/a.before"
run_killing a-B 2 "$T_B" -B -r s3://repozo/clusterA -f "$FS"
objects clusterA > "$WORK/a.after"
out=$(describe)
if [ "$RC" = 0 ]; then
    if why=$(check_recovers a clusterA "$S1"); then
        pass a "full backup, node 2 killed: $out; -V passes, -R md5 right"
    else
        fail a "full backup, node 2 killed: $out; but $why"
    fi
else
    problems=
    one_line "$WORK/a-B.err" || problems="$problems; stderr has $(grep -c . "$WORK/a-B.err") lines"
    run a-L -L -r s3://repozo/clusterA || problems="$problems; -L failed: $(head -1 "$WORK/a-L.err")"
    grep -q "no backups" "$WORK/a-L.out" || problems="$problems; -L shows backups: $(head -3 "$WORK/a-L.out")"
    if run a-R -R -r s3://repozo/clusterA -o "$WORK/a.fs"; then
        problems="$problems; -R of a failed first backup exits 0"
    else
        one_line "$WORK/a-R.err" || problems="$problems; -R stderr not one line"
    fi
    [ ! -e "$WORK/a.fs" ] || problems="$problems; -R wrote a file"
    check_new_objects "$WORK/a.before" "$WORK/a.after" 0 "$(stat -c %s "$FS")" || problems="$problems; partial data file visible"
    if [ -z "$problems" ]; then
        pass a "full backup, node 2 killed: $out: '$(head -1 "$WORK/a-B.err")'; -L 'no backups', -R refuses"
    else
        fail a "full backup, node 2 killed: $out: '$(head -1 "$WORK/a-B.err")'${problems}"
    fi
fi
restart 2
show_locks clusterA
if run a-heal -B -r s3://repozo/clusterA -f "$FS" && why=$(check_recovers a-heal clusterA "$S1"); then
    echo "     a: backup again with every node up: fine"
else
    fail a-after "backup with every node up after the kill: $(head -1 "$WORK/a-heal.err") ${why:-}"
fi

# ---- b: incremental backup, node 2 killed mid-upload
run b-full -B -r s3://repozo/clusterB -f "$FS" || {
    fail b "the full backup before it failed: $(head -1 "$WORK/b-full.err")"
    exit 1
}
S1_SIZE=$(stat -c %s "$FS")
grow_db $((MB / 2))
S2=$(md5 "$FS")
S2_SIZE=$(stat -c %s "$FS")
t0=$(now)
run base-I -B -r s3://repozo/baseline -f "$FS" || {
    fail b "the incremental backup with every node up failed: $(head -1 "$WORK/base-I.err")"
    exit 1
}
T_I=$(elapsed "$t0")
echo "     incremental of $((S2_SIZE - S1_SIZE)) bytes: ${T_I}s with every node up"
objects clusterB > "$WORK/b.before"
run_killing b-B 2 "$T_I" -B -r s3://repozo/clusterB -f "$FS"
objects clusterB > "$WORK/b.after"
out=$(describe)
if [ "$RC" = 0 ]; then
    if why=$(check_recovers b clusterB "$S2"); then
        pass b "incremental backup, node 2 killed: $out; -V passes, -R md5 right"
    else
        fail b "incremental backup, node 2 killed: $out; but $why"
    fi
else
    problems=
    one_line "$WORK/b-B.err" || problems="$problems; stderr has $(grep -c . "$WORK/b-B.err") lines"
    why=$(check_recovers b clusterB "$S1") || problems="$problems; the previous state: $why"
    check_new_objects "$WORK/b.before" "$WORK/b.after" "$S1_SIZE" $((S2_SIZE - S1_SIZE)) || problems="$problems; partial data file visible"
    if [ -z "$problems" ]; then
        pass b "incremental backup, node 2 killed: $out: '$(head -1 "$WORK/b-B.err")'; the previous state verifies and recovers"
    else
        fail b "incremental backup, node 2 killed: $out: '$(head -1 "$WORK/b-B.err")'${problems}"
    fi
fi
restart 2
show_locks clusterB
if run b-heal -B -r s3://repozo/clusterB -f "$FS" && why=$(check_recovers b-heal clusterB "$S2"); then
    echo "     b: backup again with every node up: fine"
else
    fail b-after "backup with every node up after the kill: $(head -1 "$WORK/b-heal.err") ${why:-}"
fi

# ---- c and e: recovery, node 2 then node 1 killed mid-download
recover_killing() { # recover_killing NAME NODE WHAT
    local name=$1 node=$2 what=$3 o="$WORK/$1.fs"
    rm -f "$o" "$o.part" "$o.index"
    run_killing "$name-R" "$node" "$T_R" -R -r s3://repozo/clusterB -o "$o"
    local out
    out=$(describe)
    if [ "$RC" = 0 ]; then
        if [ "$(md5 "$o")" = "$S2" ]; then
            pass "$name" "recovery, $what killed: $out; md5 right"
        else
            fail "$name" "recovery, $what killed: $out; WRONG md5 $(md5 "$o") (expected $S2)"
        fi
    else
        local problems=
        one_line "$WORK/$name-R.err" || problems="$problems; stderr has $(grep -c . "$WORK/$name-R.err") lines"
        [ ! -e "$o" ] || problems="$problems; $o exists"
        [ ! -e "$o.part" ] || problems="$problems; $o.part left ($(stat -c %s "$o.part") bytes)"
        [ ! -e "$o.index" ] || problems="$problems; $o.index left"
        if [ -z "$problems" ]; then
            pass "$name" "recovery, $what killed: $out: '$(head -1 "$WORK/$name-R.err")'; no output file left"
        else
            fail "$name" "recovery, $what killed: $out: '$(head -1 "$WORK/$name-R.err")'${problems}"
        fi
    fi
    rm -f "$o" "$o.part" "$o.index"
    restart "$node"
    show_locks clusterB
}
recover_killing c 2 "node 2"

# ---- d: full backup (-F), node 1 (the endpoint) killed mid-upload
objects clusterB > "$WORK/d.before"
grow_db 8
S3=$(md5 "$FS")
run_killing d-B 1 "$T_B" -B -F -r s3://repozo/clusterB -f "$FS"
out=$(describe)
restart 1
objects clusterB > "$WORK/d.after"
show_locks clusterB
if [ "$RC" = 0 ]; then
    if why=$(check_recovers d clusterB "$S3"); then
        pass d "full backup, node 1 (endpoint) killed: $out; -V passes, -R md5 right"
    else
        fail d "full backup, node 1 (endpoint) killed: $out; but $why"
    fi
else
    problems=
    one_line "$WORK/d-B.err" || problems="$problems; stderr has $(grep -c . "$WORK/d-B.err") lines"
    why=$(check_recovers d clusterB "$S2") || problems="$problems; the previous state: $why"
    check_new_objects "$WORK/d.before" "$WORK/d.after" 0 "$(stat -c %s "$FS")" || problems="$problems; partial data file visible"
    if [ -z "$problems" ]; then
        pass d "full backup, node 1 (endpoint) killed: $out: '$(head -1 "$WORK/d-B.err")'; after its restart the previous state verifies and recovers"
    else
        fail d "full backup, node 1 (endpoint) killed: $out: '$(head -1 "$WORK/d-B.err")'${problems}"
    fi
fi
if run d-heal -B -r s3://repozo/clusterB -f "$FS" && why=$(check_recovers d-heal clusterB "$S3"); then
    echo "     d: backup again with every node up: fine"
    S2=$S3
else
    fail d-after "backup with every node up after the kill: $(head -1 "$WORK/d-heal.err") ${why:-}"
fi

recover_killing e 1 "node 1 (endpoint)"

# ---- final: nothing lost anywhere
problems=
for p in baseline clusterA clusterB; do
    run "final-$p" -V -r "s3://repozo/$p" || problems="$problems; -V $p: $(head -1 "$WORK/final-$p.err")"
done
why=$(check_recovers final clusterB "$S2") || problems="$problems; clusterB: $why"
for p in baseline clusterA clusterB; do
    left=$(show_locks "$p" real)
    [ -z "$left" ] || problems="$problems; lock objects left under $p: $left"
done
if [ -z "$problems" ]; then
    pass final "every prefix verifies, clusterB recovers the last backup"
else
    fail final "${problems#; }"
fi

[ "$FAILS" = 0 ] || {
    echo "$FAILS failed (seed $SEED)"
    exit 1
}
