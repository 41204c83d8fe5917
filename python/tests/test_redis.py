# SPDX-License-Identifier: MIT
"""The same interfaces on a store kept in Redis: each test runs a
redis-server of its own on a unix socket."""

import subprocess
import sys
import textwrap
import threading
import unittest

import axstm
from axstm import ConcurrentUpdate, Store, TVar, atomically, retry
from pyaxstm_testutil import RedisTestCase, captured_stdout


class Handles(RedisTestCase):
    def test_usevar_commit_conflict(self):
        A = Store(self.redis.address())
        B = Store(self.redis.address())
        self.assertTrue(A.remote)
        a = A.usevar("greeting")
        a.set("Hello World")
        a.commit()
        b = B.usevar("greeting")
        self.assertEqual((b.version, b.value), (1, "Hello World"))
        b.set("Woo")
        b.commit()
        a.set("again")
        with self.assertRaises(ConcurrentUpdate):
            a.commit()
        with captured_stdout() as out:
            A.dump()
        self.assertEqual(out.getvalue(), "DEBUG: Store dump ------------------------------\n"
                         "      greeting : Value(2, 'Woo')\n\n")

    def test_using_and_keys(self):
        A = Store(self.redis.address())
        D = A.using("x", 1, (2, "t"))
        D["x"].set({"nested": [1]})
        D[1].set(2.5)
        D[(2, "t")].set(None)
        D.commit()
        B = Store(self.redis.address())
        E = B.using(1.0, "x")
        self.assertEqual((E[1.0].value, E["x"].value), (2.5, {"nested": [1]}))
        self.assertEqual(sorted(map(repr, B.keys())), ["'x'", "(2, 't')", "1"])
        self.assertEqual(B.stats()["keys"], 3)

    def test_another_process(self):
        A = Store(self.redis.address())
        child = textwrap.dedent("""
            import sys, axstm
            S = axstm.Store(sys.argv[1])
            v = S.usevar("from-child")
            v.set([v.value, "child"])
            v.commit()
        """)
        subprocess.run([sys.executable, "-c", child, self.redis.address()], check=True)
        self.assertEqual(A.usevar("from-child").value, [None, "child"])

    def test_refuses_what_only_this_process_could_read(self):
        A = Store(self.redis.address())
        v = A.usevar("k")
        v.set(lambda: 1)
        with self.assertRaises(TypeError):
            v.commit()
        self.assertEqual(A.usevar("k").version, 0)

    def test_threads(self):
        A = Store(self.redis.address())

        def worker():
            S = Store(self.redis.address())
            for _ in range(100):
                while True:
                    v = S.usevar("counter")
                    v.set((v.value or 0) + 1)
                    try:
                        v.commit()
                        break
                    except ConcurrentUpdate:
                        pass
        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(A.usevar("counter").value, 300)

    def test_unreachable(self):
        with self.assertRaises(axstm.StoreIOError):
            Store("redis+unix://%s/nothing-here" % self.redis.dir)


class Transactions(RedisTestCase):
    def test_tvars(self):
        S = Store(self.redis.address())
        a, b = TVar(10, store=S), TVar(20, store=S)

        def body():
            a.set(a.get() - 5)
            b.set(b.get() + 5)
            return a.get() + b.get()
        self.assertEqual(S.atomically(body), 30)

        def failing():
            a.set(0)
            raise KeyError()
        with self.assertRaises(KeyError):
            S.atomically(failing)
        self.assertEqual(S.atomically(lambda: (a.get(), b.get())), (5, 25))
        name = a._name
        del a
        self.assertEqual(S.usevar(axstm._keys.key_from_name(name)).version, 0)

    def test_retry_across_threads(self):
        S = Store(self.redis.address())
        box = TVar(None, store=S)

        def take():
            x = box.get()
            if x is None:
                retry()
            box.set(None)
            return x
        got = []
        t = threading.Thread(target=lambda: got.append(atomically(take, S)))
        t.start()
        atomically(lambda: box.set("item"), S)
        t.join()
        self.assertEqual(got, ["item"])


if __name__ == "__main__":
    unittest.main()
