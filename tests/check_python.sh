#!/bin/sh
# SPDX-License-Identifier: MIT
# check_python.sh -- the Python bindings' unittest suite (python/tests/),
# run with the interpreter configure chose against the module just built,
# never an installed one: a staging directory gets the built extension
# (python/axstm/.libs/_axstm.so) and the package's .py files, and is put
# first on PYTHONPATH.  The extension finds the just-built libaxstm through
# LD_LIBRARY_PATH.
#
# Run by `make check` with top_srcdir, top_builddir and PYTHON in the
# environment (see AM_TESTS_ENVIRONMENT in Makefile.am).  Exit 0 pass,
# 1 fail, 77 skip.

top_srcdir=${top_srcdir:-.}
top_builddir=${top_builddir:-.}
PYTHON=${PYTHON:-/usr/bin/python3}

so="$top_builddir/python/axstm/.libs/_axstm.so"
if [ ! -r "$so" ]; then
    echo "check_python: $so is missing (build the bindings first)"
    exit 1
fi

stage="$top_builddir/tests/python-stage"
rm -rf "$stage"
mkdir -p "$stage/axstm" "$stage/Axon" || exit 1
cp "$so" "$stage/axstm/" || exit 1
cp "$top_srcdir"/python/axstm/*.py "$stage/axstm/" || exit 1
cp "$top_srcdir"/python/Axon/*.py "$stage/Axon/" || exit 1

PYTHONPATH="$stage${PYTHONPATH:+:$PYTHONPATH}"
LD_LIBRARY_PATH="$top_builddir/lib/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The tests import their helper from the tests directory; -B keeps the
# source tree free of __pycache__ (make distcheck builds from a read-only
# one).
PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH LD_LIBRARY_PATH PYTHONDONTWRITEBYTECODE
"$PYTHON" -B -m unittest discover -v -s "$top_srcdir/python/tests" -t "$top_srcdir/python/tests" ||
    exit 1

# The same suite once more, on a store kept in Redis (on_store.py): on a
# redis-server of this script's own, stopped by its pid.  Left out only
# where redis-server is missing, or the library was built without hiredis.
if ! command -v redis-server >/dev/null 2>&1; then
    echo "check_python: no redis-server: the suite ran in process only"
    exit 0
fi
. "$top_srcdir/tests/redis_server.sh"
redis_server_start check_python
AXSTM_TEST_STORE=$REDIS_ADDRESS
export AXSTM_TEST_STORE
if ! "$PYTHON" -B -c 'import axstm, os; axstm.Store(os.environ["AXSTM_TEST_STORE"])' 2>/dev/null; then
    echo "check_python: this build opens no Redis store: the suite ran in process only"
    exit 0
fi
echo "== the suite again, on a store kept in Redis"
"$PYTHON" -B "$top_srcdir/python/tests/on_store.py"
