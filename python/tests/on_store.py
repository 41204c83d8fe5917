# SPDX-License-Identifier: MIT
"""Runs the whole Python suite again on the store at AXSTM_TEST_STORE (a
store address, e.g. a Redis server's): every Store() made without an
address, and the default store of TVars, open a store there under a prefix
no other store had.  Tests of what only an in-process store has are marked
with pyaxstm_testutil.local_only and skipped here.  tests/check_python.sh
runs it with a redis-server of its own."""

import itertools
import os
import sys
import unittest

import axstm
import Axon.STM
from axstm import _axstm

ADDRESS = os.environ["AXSTM_TEST_STORE"]
_count = itertools.count()


def _unique_address():
    joiner = "&" if "?" in ADDRESS else "?"
    return "%s%cprefix=py%d.%d:&timeout_ms=60000" % (ADDRESS, joiner, os.getpid(), next(_count))


class RemoteStore(axstm.Store):
    """axstm.Store whose default address is the test server."""

    def __new__(cls, address=None):
        return super().__new__(cls, address or _unique_address())

    def __init__(self, address=None):
        super().__init__(address)


def main():
    axstm.Store = RemoteStore
    Axon.STM.Store = RemoteStore
    axstm.default_store = RemoteStore()
    _axstm._set_default_store(axstm.default_store)
    here = os.path.dirname(os.path.abspath(__file__))
    suite = unittest.defaultTestLoader.discover(here, top_level_dir=here)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
