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
# own cover concurrency there).  The transaction suites run a second time
# on stores opened with first_read=cache.  Skipped only without
# redis-server.
if ! command -v redis-server >/dev/null 2>&1; then
    echo "check_on_redis: no redis-server on this machine"
    exit 77
fi
. "${top_srcdir:-.}/tests/redis_server.sh"
redis_server_start check_on_redis
AXSTM_TEST_STORE=$REDIS_ADDRESS
CK_EXCLUDE_TAGS="local long"
export AXSTM_TEST_STORE CK_EXCLUDE_TAGS
status=0
for suite in check_value check_collection check_store check_or_else check_retry check_isolation \
    check_delete check_txn check_watch; do
    echo "== $suite, on a store kept in Redis"
    "${top_builddir:-.}/tests/$suite" || status=1
done
# The transaction suites once more with first_read=cache: a first read
# from what the process knows must keep every rule they test.
AXSTM_TEST_STORE="$REDIS_ADDRESS?first_read=cache"
for suite in check_or_else check_retry check_isolation check_txn; do
    echo "== $suite, on a store kept in Redis, first_read=cache"
    "${top_builddir:-.}/tests/$suite" || status=1
done
exit $status
