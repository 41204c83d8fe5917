# SPDX-License-Identifier: MIT
"""The stm package's TVar, atomically, retry and or_else."""

import gc
import os
import signal
import threading
import unittest

import axstm
from axstm import NoTransaction, Retry, Store, TDict, TList, TVar, atomically, or_else, retry


class Basics(unittest.TestCase):
    def test_get_set(self):
        v = TVar(1)
        self.assertEqual(atomically(v.get), 1)
        atomically(lambda: v.set(v.get() + 1))
        self.assertEqual(atomically(lambda: v.value), 2)

        def body():
            v.value = [v.value]
            return "done"
        self.assertEqual(atomically(body), "done")
        self.assertEqual(atomically(v.get), [2])
        self.assertIsNone(atomically(TVar().get))

    def test_prefetch(self):
        a, b, empty = TVar(1), TVar(2), TVar()
        other = TVar(3, store=Store())

        def body():
            axstm.prefetch(a, b, empty, a)
            axstm.prefetch()
            return a.get() + b.get(), empty.get()
        self.assertEqual(atomically(body), (3, None))
        with self.assertRaises(NoTransaction):
            axstm.prefetch(a)
        with self.assertRaises(NoTransaction):
            axstm.prefetch()
        with self.assertRaises(TypeError):
            atomically(lambda: axstm.prefetch(a, 5))
        with self.assertRaises(ValueError):
            atomically(lambda: axstm.prefetch(a, other))

    def test_prefetched_tvar_counts_as_read(self):
        a, b = TVar(0), TVar(0)
        runs = []

        def body():
            axstm.prefetch(a, b)
            if not runs:
                # Another thread commits a, which this run never gets.
                t = threading.Thread(target=lambda: atomically(lambda: a.set(1)))
                t.start()
                t.join()
            runs.append(b.get())
            b.set(b.get() + 1)
        atomically(body)
        self.assertEqual(len(runs), 2)
        self.assertEqual(atomically(b.get), 1)

    def test_outside_a_transaction(self):
        v = TVar(1)
        with self.assertRaises(NoTransaction):
            v.get()
        with self.assertRaises(RuntimeError):
            v.value = 2
        with self.assertRaises(NoTransaction):
            retry()
        with self.assertRaises(NoTransaction):
            or_else(v.get)
        self.assertFalse(axstm.in_transaction())
        self.assertTrue(atomically(axstm.in_transaction))

    def test_exception_rolls_back(self):
        a, b = TVar(10), TVar(20)

        def body():
            a.set(0)
            b.set(0)
            raise KeyError("boom")
        with self.assertRaises(KeyError):
            atomically(body)
        self.assertEqual(atomically(lambda: (a.get(), b.get())), (10, 20))

    def test_retry_is_not_an_exception(self):
        self.assertTrue(issubclass(Retry, BaseException))
        self.assertFalse(issubclass(Retry, Exception))
        gate = TVar(False)
        seen = []

        def body():
            try:
                if not gate.get():
                    retry()
            except Exception:
                seen.append("swallowed")
            return "through"
        t = threading.Thread(target=lambda: atomically(lambda: gate.set(True)))
        t.start()
        self.assertEqual(atomically(body), "through")
        t.join()
        self.assertEqual(seen, [])

    def test_retry_without_reads(self):
        with self.assertRaises(ValueError):
            atomically(retry)

    def test_nested(self):
        a = TVar(1)

        def inner():
            a.set(100)
            raise ValueError("inner")

        def outer():
            a.set(2)
            try:
                atomically(inner)
            except ValueError:
                pass
            return a.get()
        self.assertEqual(atomically(outer), 2)
        self.assertEqual(atomically(a.get), 2)
        self.assertEqual(atomically(lambda: atomically(lambda: a.get() + 1)), 3)

    def test_or_else(self):
        a = TVar(0)

        def first():
            a.set(99)
            retry()

        def second():
            return a.get()
        self.assertEqual(atomically(lambda: or_else(first, second)), 0)
        self.assertEqual(atomically(a.get), 0)
        self.assertEqual(atomically(lambda: or_else(lambda: 1, second)), 1)

    def test_other_store(self):
        S = Store()
        v = TVar(5, store=S)
        self.assertEqual(S.atomically(v.get), 5)
        self.assertEqual(atomically(v.get, S), 5)
        with self.assertRaises(ValueError):
            atomically(v.get)
        self.assertIs(v.store, S)

    def test_named(self):
        S = Store()
        a = TVar(1, store=S, key="shared")
        b = TVar(2, store=S, key="shared")  # the key has a value: kept
        self.assertEqual(S.atomically(b.get), 1)
        self.assertEqual(a.key, "shared")
        del a, b
        gc.collect()
        self.assertEqual(S.usevar("shared").value, 1)  # named keys stay

    def test_collected_tvar_leaves_no_key(self):
        S = Store()
        v = TVar("x", store=S)
        self.assertEqual(S.stats()["keys"], 1)
        del v
        self.assertEqual(S.stats()["keys"], 0)
        vs = [TVar(i, store=S) for i in range(1000)]
        S.atomically(lambda: [v.set(v.get() + 1) for v in vs])
        self.assertEqual(S.stats()["keys"], 1000)
        del vs
        gc.collect()
        self.assertEqual(S.stats()["keys"], 0)

    def test_signal_interrupts_a_wait(self):
        class Interrupted(Exception):
            pass

        def handler(signum, frame):
            raise Interrupted()
        old = signal.signal(signal.SIGUSR1, handler)
        self.addCleanup(signal.signal, signal.SIGUSR1, old)
        never = TVar(None)
        waiting = threading.Event()

        def body():
            waiting.set()
            if never.get() is None:
                retry()

        def interrupt():
            waiting.wait()
            os.kill(os.getpid(), signal.SIGUSR1)
        # The signal comes once the body has run: the handler's exception
        # ends the call, whether it is seen during the wait (between its
        # slices) or inside another run of the body.
        t = threading.Thread(target=interrupt)
        t.start()
        with self.assertRaises(Interrupted):
            atomically(body)
        t.join()


class Structures(unittest.TestCase):
    def test_tlist(self):
        q = TList([1, 2])
        atomically(lambda: q.append(3))
        self.assertEqual(atomically(lambda: list(q)), [1, 2, 3])
        self.assertEqual(atomically(lambda: q.pop(0)), 1)
        self.assertEqual(atomically(lambda: (len(q), q[0], q.index(3))), (2, 2, 1))

    def test_tdict(self):
        d = TDict({"a": 1})
        atomically(lambda: d.update(b=2))
        self.assertEqual(atomically(lambda: sorted(d.items())), [("a", 1), ("b", 2)])
        self.assertEqual(atomically(lambda: d.pop("a")), 1)
        self.assertEqual(atomically(lambda: ("a" in d, d.get("b"), len(d))), (False, 2, 1))


class Queues(unittest.TestCase):
    """A blocking queue with retry, and or_else across two queues, used by
    several threads: every item is taken exactly once."""

    def test_blocking_queue(self):
        items = TVar(())
        got = [[] for _ in range(3)]

        def take():
            q = items.get()
            if not q:
                retry()
            items.set(q[1:])
            return q[0]

        def consumer(out):
            while True:
                x = atomically(take)
                if x is None:
                    return
                out.append(x)
        threads = [threading.Thread(target=consumer, args=(out,)) for out in got]
        for t in threads:
            t.start()
        for i in range(600):
            atomically(lambda i=i: items.set(items.get() + (i,)))
        for _ in threads:
            atomically(lambda: items.set(items.get() + (None,)))
        for t in threads:
            t.join()
        self.assertEqual(sorted(sum(got, [])), list(range(600)))

    def test_or_else_two_queues(self):
        q1, q2 = TList(), TList()
        got = []

        def pop(q):
            def fn():
                if len(q) == 0:
                    retry()
                return q.pop(0)
            return fn

        def consumer():
            while True:
                x = atomically(lambda: or_else(pop(q1), pop(q2)))
                if x is None:
                    return
                got.append(x)
        t = threading.Thread(target=consumer)
        t.start()
        for i in range(200):
            atomically(lambda i=i: (q1 if i % 2 else q2).append(i))
        atomically(lambda: q2.append(None))
        t.join()
        self.assertEqual(sorted(got), list(range(200)))


if __name__ == "__main__":
    unittest.main()
