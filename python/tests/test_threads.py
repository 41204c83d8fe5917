# SPDX-License-Identifier: MIT
"""Threads sharing a store: bank transfers with an auditor that must
always see the exact total, in both interfaces.  Workers record; the main
thread asserts after joining them."""

import random
import threading
import unittest

from axstm import ConcurrentUpdate, Store, TVar, atomically

ACCOUNTS = 10
START = 1000
THREADS = 4
TRANSFERS = 1500


class Bank(unittest.TestCase):
    def test_tvars(self):
        accounts = [TVar(START) for _ in range(ACCOUNTS)]
        done = threading.Event()
        totals = []

        def transfer(a, b, amount):
            if accounts[a].get() >= amount:
                accounts[a].set(accounts[a].get() - amount)
                accounts[b].set(accounts[b].get() + amount)

        def worker(seed):
            rnd = random.Random(seed)
            for _ in range(TRANSFERS):
                a, b = rnd.sample(range(ACCOUNTS), 2)
                atomically(lambda: transfer(a, b, rnd.randint(1, 100)))

        def auditor():
            while not done.is_set():
                totals.append(atomically(lambda: sum(v.get() for v in accounts)))

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        audit = threading.Thread(target=auditor)
        audit.start()
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        done.set()
        audit.join()
        self.assertTrue(totals)
        self.assertEqual(set(totals), {ACCOUNTS * START})
        self.assertEqual(atomically(lambda: sum(v.get() for v in accounts)), ACCOUNTS * START)

    def test_axon(self):
        S = Store()
        names = ["account.%d" % i for i in range(ACCOUNTS)]
        D = S.using(*names)
        for n in names:
            D[n].set(START)
        D.commit()
        done = threading.Event()
        totals = []
        conflicts = []

        def worker(seed):
            rnd = random.Random(seed)
            lost = 0
            for _ in range(TRANSFERS):
                a, b = rnd.sample(names, 2)
                amount = rnd.randint(1, 100)
                while True:
                    X = S.using(a, b)
                    if X[a].value < amount:
                        break
                    X[a].set(X[a].value - amount)
                    X[b].set(X[b].value + amount)
                    try:
                        X.commit()
                        break
                    except ConcurrentUpdate:
                        lost += 1
            conflicts.append(lost)

        def auditor():
            while not done.is_set():
                X = S.using(*names)
                totals.append(sum(X[n].value for n in names))

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        audit = threading.Thread(target=auditor)
        audit.start()
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        done.set()
        audit.join()
        self.assertEqual(set(totals), {ACCOUNTS * START})
        X = S.using(*names)
        self.assertEqual(sum(X[n].value for n in names), ACCOUNTS * START)
        self.assertEqual(len(conflicts), THREADS)

    def test_counter(self):
        S = Store()

        def worker():
            for _ in range(1000):
                while True:
                    v = S.usevar("counter")
                    v.set((v.value or 0) + 1)
                    try:
                        v.commit()
                        break
                    except ConcurrentUpdate:
                        pass
        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        v = S.usevar("counter")
        self.assertEqual((v.value, v.version), (THREADS * 1000, THREADS * 1000))


if __name__ == "__main__":
    unittest.main()
