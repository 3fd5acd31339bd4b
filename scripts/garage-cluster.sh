#!/usr/bin/env bash
# A three-node Garage cluster (replication factor 3, one node per zone) on
# loopback, for the tests of `-r s3://` with a node going down
# (scripts/test-s3-cluster.sh). The same Garage binary as scripts/garage.sh
# (built once by `scripts/garage.sh install`, cached in $REPOZO_TOOLS).
#
#   scripts/garage-cluster.sh start DIR     start nodes 1-3 under DIR/node1..3, connect
#                                           them, apply a layout, create the bucket
#                                           `repozo` and a key; writes DIR/env (AWS_*
#                                           variables, endpoint = node 1) and DIR/env1..3
#                                           (endpoint = that node) and prints DIR/env
#   scripts/garage-cluster.sh kill DIR N    SIGKILL node N (no clean shutdown)
#   scripts/garage-cluster.sh restart DIR N start node N again (same data, ports, id)
#                                           and wait until it is back in the cluster
#   scripts/garage-cluster.sh status DIR    `garage status` seen from the first live node
#   scripts/garage-cluster.sh stop DIR      stop all nodes
set -euo pipefail
VERSION=2.5.0
TOOLS="${REPOZO_TOOLS:-$HOME/.cache/repozo-tools}"
GARAGE="$TOOLS/garage-$VERSION/bin/garage"
HERE=$(cd "$(dirname "$0")" && pwd)
NODES="1 2 3"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

port_open() {
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$1" 2>/dev/null
}

# poll CMD... every 0.1 s for up to $1 seconds
wait_for() {
    local secs=$1
    shift
    local end=$((SECONDS + secs))
    while ! "$@" > /dev/null 2>&1; do
        if [ "$SECONDS" -ge "$end" ]; then
            return 1
        fi
        sleep 0.1
    done
}

g() { # g N ARGS...: the garage CLI, talking to node N
    local n=$1
    shift
    "$GARAGE" -c "$DIR/node$n/garage.toml" "$@"
}

pid_alive() {
    [ -f "$DIR/node$1/pid" ] && kill -0 "$(cat "$DIR/node$1/pid")" 2>/dev/null
}

launch() { # launch N: start node N's server in the background, wait for its ports
    local n=$1 d="$DIR/node$1"
    if pid_alive "$n"; then
        echo "node $n is already running (pid $(cat "$d/pid"))" >&2
        return 1
    fi
    setsid "$GARAGE" -c "$d/garage.toml" server >> "$d/server.log" 2>&1 < /dev/null &
    echo $! > "$d/pid"
    # shellcheck disable=SC1091
    local rpc s3
    rpc=$(cat "$d/rpc_port")
    s3=$(cat "$d/s3_port")
    if ! wait_for 60 port_open "$rpc" || ! wait_for 60 port_open "$s3"; then
        echo "garage node $n did not start: $d/server.log" >&2
        tail -20 "$d/server.log" >&2
        return 1
    fi
}

# all three nodes are up in `garage status` seen from node $1
all_up() {
    local out
    out=$(g "$1" status 2>/dev/null) || return 1
    # "==== HEALTHY NODES ====" lists the connected nodes; 3 with a role
    ! grep -q "FAILED NODES" <<<"$out" &&
        [ "$(sed -n '/HEALTHY NODES/,/^$/p' <<<"$out" | grep -c '127.0.0.1:')" -eq 3 ]
}

healthy() {
    g "$1" health 2>/dev/null | grep -Eq "Cluster health: +HEALTHY"
}

start() {
    DIR=$1
    "$HERE/garage.sh" install > /dev/null
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    local secret n
    secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    for n in $NODES; do
        local d="$DIR/node$n" s3 rpc
        mkdir -p "$d/meta" "$d/data"
        s3=$(free_port)
        rpc=$(free_port)
        echo "$s3" > "$d/s3_port"
        echo "$rpc" > "$d/rpc_port"
        cat > "$d/garage.toml" <<CONF
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
CONF
        launch "$n"
    done
    # node ids (full id@addr), then connect 1 to 2 and 3
    for n in $NODES; do
        wait_for 30 g "$n" node id -q
        g "$n" node id -q 2> /dev/null | tail -1 > "$DIR/node$n/id"
    done
    for n in 2 3; do
        g 1 node connect "$(cat "$DIR/node$n/id")" > /dev/null
    done
    if ! wait_for 60 all_up 1; then
        echo "the three garage nodes did not see each other" >&2
        g 1 status >&2 || true
        return 1
    fi
    for n in $NODES; do
        g 1 layout assign -z "dc$n" -c 1G "$(cut -d@ -f1 "$DIR/node$n/id")" > /dev/null
    done
    g 1 layout apply --version 1 > /dev/null
    if ! wait_for 60 healthy 1; then
        echo "the cluster did not become healthy after the layout" >&2
        g 1 health >&2 || true
        return 1
    fi
    local key secret_key
    key="GK$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
    secret_key=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    g 1 key import --yes -n repozo "$key" "$secret_key" > /dev/null
    g 1 bucket create repozo > /dev/null
    g 1 bucket allow --read --write --owner repozo --key "$key" > /dev/null
    for n in $NODES; do
        cat > "$DIR/env$n" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$(cat "$DIR/node$n/s3_port")
export AWS_REGION=garage
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret_key
export REPOZO_S3_BUCKET=repozo
ENV
    done
    cp "$DIR/env1" "$DIR/env"
    # ready when every node's S3 endpoint lists the bucket with the key
    for n in $NODES; do
        if ! wait_for 60 s3_ready "$DIR/env$n"; then
            echo "node $n's S3 API does not list the bucket" >&2
            return 1
        fi
    done
    cat "$DIR/env"
}

# a signed ListObjectsV2 on the bucket answers 200 (awscli of the test venv)
ROOT="$HERE/.."
# shellcheck source=scripts/s3mini.sh
. "$HERE/s3mini.sh"

s3_ready() {
    (
        # shellcheck disable=SC1090
        . "$1"
        s3mini ls repozo "" > /dev/null
    )
}

kill_node() {
    DIR=$1
    local n=$2
    if ! pid_alive "$n"; then
        echo "node $n is not running" >&2
        return 1
    fi
    kill -KILL "$(cat "$DIR/node$n/pid")"
    # reap: wait until the process is gone
    wait_for 10 bash -c "! kill -0 $(cat "$DIR/node$n/pid") 2>/dev/null"
    rm -f "$DIR/node$n/pid"
}

restart() {
    DIR=$(cd "$1" && pwd)
    local n=$2 other=1
    launch "$n"
    [ "$n" = 1 ] && other=2
    # the others retry a lost peer with a backoff and count it down until
    # their own connection to it is back (10-30 s measured, even when the
    # restarted node connected to them): connect both ways
    local m
    for m in $NODES; do
        if [ "$m" != "$n" ] && pid_alive "$m"; then
            wait_for 30 g "$m" node connect "$(cat "$DIR/node$n/id")" || true
            wait_for 30 g "$n" node connect "$(cat "$DIR/node$m/id")" || true
        fi
    done
    # back in the cluster: every node sees all three, and the cluster is healthy
    if ! wait_for 60 all_up "$n" || ! wait_for 60 healthy "$other" || ! wait_for 60 s3_ready "$DIR/env$n"; then
        echo "node $n did not rejoin the cluster" >&2
        g "$n" status >&2 || true
        return 1
    fi
}

status() {
    DIR=$(cd "$1" && pwd)
    local n
    for n in $NODES; do
        if pid_alive "$n"; then
            g "$n" status
            return
        fi
    done
    echo "no node is running" >&2
    return 1
}

stop() {
    DIR=$1
    local n
    for n in $NODES; do
        if [ -f "$DIR/node$n/pid" ]; then
            kill "$(cat "$DIR/node$n/pid")" 2> /dev/null || true
            rm -f "$DIR/node$n/pid"
        fi
    done
}

case "${1:-}" in
start) start "$2" ;;
kill) kill_node "$2" "$3" ;;
restart) restart "$2" "$3" ;;
status) status "$2" ;;
stop) stop "$2" ;;
*)
    echo "usage: scripts/garage-cluster.sh start DIR|kill DIR N|restart DIR N|status DIR|stop DIR" >&2
    exit 2
    ;;
esac
