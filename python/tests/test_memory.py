# SPDX-License-Identifier: MIT
"""Nothing leaks: a million checkouts and commits keep the process's
memory, the store's bytes and the values' reference counts flat."""

import gc
import sys
import unittest

from axstm import Store, TVar, atomically
from pyaxstm_testutil import local_only, rss_bytes

MILLION = 1000 * 1000


@local_only("this process's memory over a million calls (minutes of round trips)")
class Leaks(unittest.TestCase):
    def test_million_checkouts(self):
        S = Store()
        payload = "x" * 100
        before_refs = sys.getrefcount(payload)
        v = S.usevar("k")
        v.set(payload)
        v.commit()
        for _ in range(20000):  # warm up the allocators; make every key
            S.usevar("k").commit()
            S.using("k", "j").commit()
            w = S.usevar(("tuple", 1))
            w.set([1, 2])
            w.commit()
        gc.collect()
        rss, held = rss_bytes(), S.stats()["bytes"]
        for _ in range(MILLION // 2):
            w = S.usevar("k")
            w.commit()
        for _ in range(MILLION // 4):
            D = S.using("k", "j")
            D.commit()
        for _ in range(MILLION // 4):
            w = S.usevar(("tuple", 1))
            w.set([1, 2])
            w.commit()
        del v, w, D
        gc.collect()
        self.assertEqual(sys.getrefcount(payload), before_refs)
        # A leak of even 8 bytes per call would be 8 MB.
        self.assertLess(rss_bytes() - rss, 4 * 1024 * 1024)
        self.assertLess(S.stats()["bytes"] - held, 64 * 1024)

    def test_transactions(self):
        S = Store()
        v = TVar(0, store=S)
        for _ in range(10000):
            atomically(lambda: v.set(v.get() + 1), S)
        gc.collect()
        rss = rss_bytes()
        for _ in range(200000):
            atomically(lambda: v.set(v.get() + 1), S)
        gc.collect()
        self.assertLess(rss_bytes() - rss, 4 * 1024 * 1024)
        self.assertEqual(atomically(v.get, S), 210000)

    def test_collected_tvars(self):
        S = Store()
        for _ in range(20000):
            TVar([1], store=S)
        self.assertEqual(S.stats()["keys"], 0)


if __name__ == "__main__":
    unittest.main()
