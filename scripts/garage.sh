#!/usr/bin/env bash
# A Garage server (the S3-compatible distributed object store, from
# crates.io) on loopback for the tests and benchmarks of `-r s3://`.
#
#   scripts/garage.sh install          build garage once (cached, see below)
#   scripts/garage.sh start DIR        start a single node with its data in DIR,
#                                      a bucket `repozo` and a key; writes DIR/env
#                                      (AWS_* variables to source) and prints it
#   scripts/garage.sh stop DIR         stop it
#   scripts/garage.sh restart DIR      start the node of DIR again (after a stop
#                                      or a kill): same data, ports and key
#
# The server is built without optimizations and without the features the
# tests do not use (k2v, metrics, lmdb), which takes a fraction of a release
# build, and cached in $REPOZO_TOOLS (default ~/.cache/repozo-tools), so a
# machine that keeps its home builds it once.  GARAGE_BIN=PATH runs that
# garage binary instead (e.g. a release build, for benchmarks); `install`
# then builds nothing.
set -euo pipefail
VERSION=2.5.0
TOOLS="${REPOZO_TOOLS:-$HOME/.cache/repozo-tools}"
GARAGE="${GARAGE_BIN:-$TOOLS/garage-$VERSION/bin/garage}"

install() {
    if [ -n "${GARAGE_BIN:-}" ]; then
        [ -x "$GARAGE" ] || { echo "GARAGE_BIN=$GARAGE is not executable" >&2; return 1; }
    elif [ ! -x "$GARAGE" ]; then
        echo "building garage $VERSION into $TOOLS (once)" >&2
        cargo install --quiet --locked --debug --no-default-features \
            --features bundled-libs,sqlite --root "$TOOLS/garage-$VERSION" "garage@$VERSION" >&2
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
    local dir=$1
    install
    mkdir -p "$dir/meta" "$dir/data"
    dir=$(cd "$dir" && pwd)
    local s3 rpc
    s3=$(free_port)
    rpc=$(free_port)
    cat > "$dir/garage.toml" <<CONF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
CONF
    local key secret
    key="GK$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
    secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    cat > "$dir/env" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3
export AWS_REGION=garage
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret
export REPOZO_S3_BUCKET=repozo
ENV
    serve "$dir"
}

# run the node of DIR (its garage.toml and env) and wait until it answers
serve() {
    local dir=$1 s3 key secret
    s3=$(sed -n 's/^api_bind_addr = "127.0.0.1:\([0-9]*\)"/\1/p' "$dir/garage.toml")
    key=$(sed -n 's/^export AWS_ACCESS_KEY_ID=//p' "$dir/env")
    secret=$(sed -n 's/^export AWS_SECRET_ACCESS_KEY=//p' "$dir/env")
    GARAGE_DEFAULT_ACCESS_KEY=$key GARAGE_DEFAULT_SECRET_KEY=$secret GARAGE_DEFAULT_BUCKET=repozo \
        setsid "$GARAGE" -c "$dir/garage.toml" server --single-node --default-bucket \
        > "$dir/server.log" 2>&1 < /dev/null &
    echo $! > "$dir/pid"
    # ready when the default bucket answers
    for _ in $(seq 1 300); do
        if grep -q "S3 API server listening" "$dir/server.log" 2>/dev/null &&
            python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$s3" 2>/dev/null; then
            cat "$dir/env"
            return 0
        fi
        sleep 0.1
    done
    echo "garage did not start: $dir/server.log" >&2
    tail -20 "$dir/server.log" >&2
    return 1
}

restart() {
    local dir
    dir=$(cd "$1" && pwd)
    [ -f "$dir/garage.toml" ] || { echo "no garage.toml in $dir" >&2; return 1; }
    install
    serve "$dir"
}

stop() {
    local dir=$1
    if [ -f "$dir/pid" ]; then
        kill "$(cat "$dir/pid")" 2>/dev/null || true
        rm -f "$dir/pid"
    fi
}

case "${1:-}" in
install) install; echo "$GARAGE" ;;
start) start "$2" ;;
stop) stop "$2" ;;
restart) restart "$2" ;;
*) echo "usage: scripts/garage.sh install|start DIR|stop DIR|restart DIR" >&2; exit 2 ;;
esac
