#!/bin/sh
# SPDX-License-Identifier: MIT
# check_on_redis.sh -- the store suites once more, on a store kept in
# Redis: the same tests, whose stores come from tu_store_ok (testutil.h),
# opened on a redis-server of this script's own (a unix socket in a
# temporary directory, no persistence, stopped by its pid), each store
# under a prefix of its own.  Test cases tagged "local" check what only an
# in-process store has (allocation-failure injection, its internal
# structures) and are left out here, and so are those tagged "long" (a
# remote store makes their thousands of calls round trips: tests of their
# own cover concurrency there).  Skipped only without redis-server.
if ! command -v redis-server >/dev/null 2>&1; then
    echo "check_on_redis: no redis-server on this machine"
    exit 77
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/axstm-redis-XXXXXX") || exit 1
redis-server --port 0 --unixsocket "$dir/sock" --unixsocketperm 700 --save '' \
    --appendonly no --daemonize no --dir "$dir" >"$dir/log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
tries=0
while [ ! -S "$dir/sock" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 2000 ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "check_on_redis: redis-server did not start:"
        cat "$dir/log"
        exit 1
    fi
    sleep 0.01
done
AXSTM_TEST_STORE="redis+unix://$dir/sock"
CK_EXCLUDE_TAGS="local long"
export AXSTM_TEST_STORE CK_EXCLUDE_TAGS
status=0
for suite in check_value check_collection check_store check_or_else check_retry check_isolation \
    check_delete check_txn check_watch; do
    echo "== $suite, on a store kept in Redis"
    "${top_builddir:-.}/tests/$suite" || status=1
done
exit $status
