#!/usr/bin/env bash
# Long soak of the randomized model test (tests/py/montecarlo.py) against
# the release build, for releases: many seeds, thousands of steps in all.
#
# Usage: scripts/soak.sh [TOTAL_STEPS [STEPS_PER_TRIAL [JOBS]]] [-- MONTECARLO_ARGS...]
#   TOTAL_STEPS      steps over all trials (default 2000)
#   STEPS_PER_TRIAL  steps per seed (default 500; the database and the
#                    repository keep evolving within a trial)
#   JOBS             trials run at once (default: number of CPUs)
#   MONTECARLO_ARGS  passed to every trial (e.g. --verbose)
# Env: SOAK_SEED=N makes the trial seeds N, N+1, ... (default: random).
#
# Logs go to target/soak/<time>/seed-N.log; a failing trial keeps its work
# directory and prints its replay command. The last line is
# "soak: N trials, F failures"; the exit status is 1 when F > 0.
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
    args+=("$1")
    shift
done
[[ "${1:-}" == "--" ]] && shift
extra=("$@")
total="${args[0]:-2000}"
per="${args[1]:-500}"
jobs="${args[2]:-$(nproc 2>/dev/null || echo 2)}"
for n in "$total" "$per" "$jobs"; do
    if ! [[ "$n" =~ ^[1-9][0-9]*$ ]]; then
        echo "usage: scripts/soak.sh [TOTAL_STEPS [STEPS_PER_TRIAL [JOBS]]] [-- MONTECARLO_ARGS...]" >&2
        exit 2
    fi
done

. scripts/venv.sh
cargo build --release --quiet

base="${SOAK_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
logdir="target/soak/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$logdir"
# Soak one fixed binary, even if target/ is rebuilt meanwhile.
bin="$logdir/repozo"
cp target/release/repozo "$bin"
trials=$(( (total + per - 1) / per ))
echo "soak: $trials trials of up to $per steps ($total in all), $jobs at a time, seeds from $base; logs in $logdir"

# One line per trial: "<seed> <steps>".
plan="$logdir/plan"
: > "$plan"
left=$total
for ((i = 0; i < trials; i++)); do
    n=$(( left < per ? left : per ))
    echo "$((base + i)) $n" >> "$plan"
    left=$(( left - n ))
done

# run_trial EXTRA_ARGS... SEED STEPS (xargs appends the plan line last)
run_trial() {
    local n=$#
    local seed=${*:n-1:1} steps=${*:n:1}
    local log="$logdir/seed-$seed.log" start=$SECONDS
    if .venv/bin/python tests/py/montecarlo.py --seed "$seed" --steps "$steps" \
        --bin "$bin" "${@:1:n-2}" > "$log" 2>&1; then
        echo "seed $seed: $steps steps passed ($((SECONDS - start)) s, $(grep -m1 's/step' "$log" | cut -d';' -f1))"
    else
        echo "seed $seed: FAILED ($((SECONDS - start)) s): $(grep -m1 '^replay:' "$log" || tail -n 1 "$log"); log $log"
        touch "$logdir/failed-$seed"
    fi
}
export -f run_trial
export logdir bin

started=$SECONDS
xargs -P "$jobs" -L 1 bash -c 'run_trial "$@"' _ "${extra[@]}" < "$plan"
failures=$(find "$logdir" -name 'failed-*' | wc -l)
echo "soak: $((SECONDS - started)) s"
echo "soak: $trials trials, $failures failures"
[[ "$failures" -eq 0 ]]
