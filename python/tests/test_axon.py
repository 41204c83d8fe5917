# SPDX-License-Identifier: MIT
"""Axon.STM's behaviour: the original module's __main__ scenarios, its
public surface, the Philosophers examples' logic."""

import gc
import random
import threading
import time
import unittest

import axstm
import Axon.STM
from Axon.STM import BusyRetry, Collection, ConcurrentUpdate, Store, Value
from pyaxstm_testutil import captured_stdout

DUMP_HEADER = "DEBUG: Store dump ------------------------------"


class Scenarios(unittest.TestCase):
    """The four scenarios of the original STM.py's __main__."""

    def test_concurrent_collections(self):
        S = Store()
        D = S.using("account_one", "account_two", "myaccount")
        D["myaccount"].set(0)
        D["account_one"].set(50)
        D["account_two"].set(100)
        D.commit()  # 1
        D = S.using("account_one", "account_two", "myaccount")
        D["myaccount"].set(D["account_one"].value + D["account_two"].value)
        E = S.using("account_one", "myaccount")
        E["myaccount"].set(E["myaccount"].value - 100)
        E["account_one"].set(100)
        E.commit()  # 2
        D["account_one"].set(0)
        D["account_two"].set(0)
        with self.assertRaises(ConcurrentUpdate):
            D.commit()  # 3 - should fail
        with captured_stdout() as out:
            S.dump()
        self.assertEqual(out.getvalue(), "\n".join([
            DUMP_HEADER,
            "      account_one : Value(2, 100)",
            "      account_two : Value(1, 100)",
            "      myaccount : Value(2, -100)",
            "", ""]))

    def test_collection_sum(self):
        S = Store()
        D = S.using("account_one", "account_two", "myaccount")
        D["account_one"].set(50)
        D["account_two"].set(100)
        D.commit()
        with captured_stdout() as out:
            S.dump()
        self.assertEqual(out.getvalue(), "\n".join([
            DUMP_HEADER,
            "      account_one : Value(1, 50)",
            "      account_two : Value(1, 100)",
            "      myaccount : Value(1, None)",
            "", ""]))
        D = S.using("account_one", "account_two", "myaccount")
        D["myaccount"].set(D["account_one"].value + D["account_two"].value)
        D["account_one"].set(0)
        D["account_two"].set(0)
        D.commit()
        self.assertEqual(S.usevar("myaccount").value, 150)
        self.assertEqual(S.usevar("account_one").version, 2)

    def test_dict_value(self):
        S = Store()
        D = S.usevar("accounts")
        D.set({"account_one": 50, "account_two": 100, "myaccount": 0})
        D.commit()  # First
        X = D.value
        X["myaccount"] = X["account_one"] + X["account_two"]
        X["account_one"] = 0
        E = S.usevar("accounts")
        Y = E.value
        Y["myaccount"] = Y["myaccount"] - 100
        Y["account_one"] = 100
        E.set(Y)
        E.commit()  # Second
        X["account_two"] = 0
        D.set(X)
        with self.assertRaises(ConcurrentUpdate):
            D.commit()  # Third - This Should fail
        self.assertEqual(S.usevar("accounts").value,
                         {"account_one": 100, "account_two": 100, "myaccount": -100})
        self.assertEqual(D.value["myaccount"], 150)

    def test_hello(self):
        S = Store()
        with captured_stdout() as out:
            greeting = S.usevar("hello")
            print(repr(greeting.value))
            greeting.set("Hello World")
            greeting.commit()
            print(greeting)
            S.dump()
            par = S.usevar("hello")
            par.set("Woo")
            par.commit()
            print(greeting)
            S.dump()
        self.assertEqual(out.getvalue(), "\n".join([
            "None",
            "Value(1, 'Hello World')",
            DUMP_HEADER,
            "      hello : Value(1, 'Hello World')",
            "",
            "Value(1, 'Hello World')",
            DUMP_HEADER,
            "      hello : Value(2, 'Woo')",
            "", ""]))
        greeting.set("Woo")
        with self.assertRaises(ConcurrentUpdate):
            greeting.commit()  # Should fail
        self.assertEqual(repr(greeting), "Value(1, 'Woo')")


class Surface(unittest.TestCase):
    def test_axon_module_is_axstm(self):
        for name in ("Store", "Value", "Collection", "ConcurrentUpdate", "BusyRetry"):
            self.assertIs(getattr(Axon.STM, name), getattr(axstm, name))
        self.assertTrue(issubclass(ConcurrentUpdate, Exception))
        self.assertTrue(issubclass(BusyRetry, Exception))
        self.assertTrue(issubclass(ConcurrentUpdate, axstm.Error))

    def test_value(self):
        S = Store()
        v = Value(1, "Hello World", S, "greeting")
        self.assertEqual(repr(v), "Value(1, 'Hello World')")
        self.assertEqual((v.version, v.value, v.store, v.key), (1, "Hello World", S, "greeting"))
        v.set([1, 2])
        self.assertEqual(v.value, [1, 2])
        c = v.clone()
        self.assertEqual((c.version, c.value, c.store, c.key), (1, [1, 2], S, "greeting"))
        self.assertIsNot(c.value, v.value)
        v.value.append(3)
        self.assertEqual(c.value, [1, 2])
        # A Value made by hand commits by the original's rule: the store's
        # version (0, a new key) is not past the Value's.
        v.commit()
        self.assertEqual(v.version, 1)
        self.assertEqual(S.usevar("greeting").value, [1, 2, 3])
        v.value = "again"
        v.commit()
        self.assertEqual(S.usevar("greeting").version, 2)
        self.assertEqual(Value(5, None, S, "x").version, 5)
        v.foo = "attributes of one's own"
        self.assertEqual(v.foo, "attributes of one's own")

    def test_store_attributes(self):
        S = Store()
        self.assertTrue(hasattr(S.lock, "acquire"))
        v = S.usevar("a", islocked=True)
        v.set(1)
        v.commit()
        S.usevar("b")
        snapshot = S.store
        self.assertEqual(list(snapshot), ["a", "b"])
        self.assertEqual(repr(snapshot["a"]), "Value(1, 1)")
        self.assertEqual(S.keys(), ["a", "b"])

    def test_set_and_set_values(self):
        S = Store()
        v = S.usevar("k")
        v.value = "x"
        S.set("k", v)
        self.assertEqual(v.version, 1)
        with self.assertRaises(TypeError):
            S.set("k", "not a Value")
        D = Collection()
        D.set_store(S)
        D["k"] = S.usevar("k")
        D["n"] = S.usevar("n")
        D["k"].set("y")
        D["n"].set(7)
        D.commit()
        self.assertEqual((S.usevar("k").value, S.usevar("n").value), ("y", 7))
        stale = {"k": v}
        with self.assertRaises(ConcurrentUpdate):
            S.set_values(stale)
        self.assertIsInstance(D, dict)
        self.assertIs(D.store, S)

    def test_collection_edits(self):
        S = Store()
        D = S.using("a", "b", "a")
        self.assertEqual(list(D), ["a", "b"])
        D["a"].set(1)
        D["a"].commit()  # one Value alone
        D["b"].set(2)
        D.commit()  # both, all or nothing; a is at version 1 now
        self.assertEqual((S.usevar("a").version, S.usevar("b").version), (2, 1))
        del D["b"]
        D["a"].set(3)
        D.commit()
        self.assertEqual((S.usevar("a").value, S.usevar("b").version), (3, 1))
        # A Value of another collection put in: committed by its version.
        E = S.using("b")
        D["b"] = E["b"]
        D["b"].set(4)
        D.commit()
        self.assertEqual(S.usevar("b").value, 4)

    def test_collections_need_no_cyclic_collector(self):
        S = Store()
        gc.collect()
        for _ in range(10):
            D = S.using("a", "b")
            D["a"].set(1)
            D.commit()
            v = D["b"]
        del D, v
        self.assertEqual(gc.collect(), 0)

    def test_copies(self):
        S = Store()
        v = S.usevar("list")
        v.set([1, [2]])
        v.commit()
        v.value[1].append(3)  # after commit: the store keeps its copy
        w = S.usevar("list")
        self.assertEqual(w.value, [1, [2]])
        w.value.append(4)  # a checkout is a private copy
        self.assertEqual(S.usevar("list").value, [1, [2]])

    def test_keys_any_hashable(self):
        S = Store()
        v = S.usevar(1)
        v.set("one")
        v.commit()
        self.assertEqual(S.usevar(1.0).value, "one")
        self.assertEqual(S.usevar(True).value, "one")
        D = S.using((1, "x"), frozenset({2, 3}), None, b"raw", "", "a\0b", "k" * 2000, 2.5)
        for i, k in enumerate(list(D)):
            D[k].set(i)
        D.commit()
        self.assertEqual(S.usevar((1.0, "x")).value, 0)
        self.assertEqual(S.usevar(frozenset({3, 2})).value, 1)
        self.assertEqual(S.usevar("k" * 2000).value, 6)
        self.assertEqual(S.keys(), [1, (1, "x"), frozenset({2, 3}), None, b"raw", "", "a\0b",
                                    "k" * 2000, 2.5])
        with self.assertRaises(TypeError):
            S.usevar([1])
        with captured_stdout() as out:
            S.dump()
        self.assertIn("      (1, 'x') : Value(1, 0)\n", out.getvalue())

        class Point:
            pass
        p = Point()
        S.usevar(p).set(1)
        self.assertIn(p, S.keys())


def all_equal(items, value):
    for i in items:
        if value != i:
            return False
    return True


class Philosopher(threading.Thread):
    """The Philosophers examples' philosopher, for a number of meals and
    with short random pauses, recording what it saw instead of printing."""

    def __init__(self, store, forks, name, meals):
        super().__init__()
        self.store, self.forks, self.meals = store, forks, meals
        self.philosopher = name
        self.bad = []

    def getforks(self):
        gotforks = False
        while not gotforks:
            try:
                X = self.store.using(*self.forks)
                if all_equal([X[fork].value for fork in self.forks], None):
                    for fork in self.forks:
                        X[fork].value = self.philosopher
                    X.commit()
                    gotforks = True
                else:
                    time.sleep(random.random() / 1000)
            except ConcurrentUpdate:
                time.sleep(random.random() / 1000)
            except BusyRetry:
                time.sleep(random.random() / 1000)
        return X

    def releaseforks(self, X):
        for fork in self.forks:
            X[fork].value = None
        X.commit()

    def run(self):
        for _ in range(self.meals):
            X = self.getforks()
            held = [self.store.usevar(fork).value for fork in self.forks]
            if held != [self.philosopher] * len(self.forks):
                self.bad.append(held)
            self.releaseforks(X)


class Philosophers(unittest.TestCase):
    def dine(self, names):
        S = Store()
        N = len(names)
        forks = [["fork.%d" % i, "fork.%d" % (i + 1)] for i in range(1, N)]
        forks.append(["fork.%d" % N, "fork.%d" % 1])
        table = [Philosopher(S, f, name, 100) for f, name in zip(forks, names)]
        for p in table:
            p.start()
        for p in table:
            p.join()
        for p in table:
            self.assertEqual(p.bad, [])
        for i in range(1, N + 1):
            self.assertIsNone(S.usevar("fork.%d" % i).value)

    def test_philosophers(self):
        # Philosophers.py: named 1..4, the last by its id().
        self.dine([1, 2, 3, 4, object.__repr__(self)])

    def test_axon_philosophers(self):
        # Axon.Philosophers.py: components named by Axon (strings).
        self.dine(["Philosopher_%d" % i for i in range(5)])


if __name__ == "__main__":
    unittest.main()
