# SPDX-License-Identifier: MIT
# redis_server.sh -- sourced by the test scripts that need a redis-server
# of their own: redis_server_start NAME starts one on a unix socket in a
# temporary directory (no persistence), waits until it listens, sets
# REDIS_ADDRESS to its store address, and arranges for it to be stopped by
# its pid and its directory removed when the script exits.  It exits the
# script with 1 if the server does not start.  Callers check first that
# redis-server is installed.
redis_server_start() {
    redis_dir=$(mktemp -d "${TMPDIR:-/tmp}/axstm-redis-XXXXXX") || exit 1
    redis-server --port 0 --unixsocket "$redis_dir/sock" --unixsocketperm 700 --save '' \
        --appendonly no --daemonize no --dir "$redis_dir" >"$redis_dir/log" 2>&1 &
    redis_pid=$!
    trap 'kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; rm -rf "$redis_dir"' EXIT
    redis_tries=0
    while [ ! -S "$redis_dir/sock" ]; do
        redis_tries=$((redis_tries + 1))
        if [ "$redis_tries" -gt 2000 ] || ! kill -0 "$redis_pid" 2>/dev/null; then
            echo "$1: redis-server did not start:"
            cat "$redis_dir/log"
            exit 1
        fi
        sleep 0.01
    done
    REDIS_ADDRESS="redis+unix://$redis_dir/sock"
}
