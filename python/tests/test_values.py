# SPDX-License-Identifier: MIT
"""Values as stored bytes: the fast paths, pickle, the fallback by
reference; keys; errors mapped to exceptions."""

import enum
import math
import unittest

import axstm
from axstm import Store, TVar, atomically
from pyaxstm_testutil import local_only


class Colour(enum.IntEnum):
    RED = 1


class Pickled:
    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return isinstance(other, Pickled) and other.x == self.x


def roundtrip(S, value):
    v = S.usevar("k")
    v.set(value)
    v.commit()
    return S.usevar("k").value


class Values(unittest.TestCase):
    def test_fast_paths(self):
        S = Store()
        for value in (None, True, False, 0, -1, 2**63 - 1, -2**63, 1.5, -0.0, math.inf, "",
                      "héllo \u20ac", b"", b"\x00\xff"):
            got = roundtrip(S, value)
            self.assertEqual(got, value)
            self.assertIs(type(got), type(value))
        self.assertTrue(math.isnan(roundtrip(S, math.nan)))

    def test_pickled(self):
        S = Store()
        for value in (2**64, -2**70, "\ud800 lone", [1, (2, 3)], {"a": {1, 2}}, Colour.RED,
                      Pickled([1]), frozenset({1}), 3 + 4j, bytearray(b"ab")):
            got = roundtrip(S, value)
            self.assertEqual(got, value)
            self.assertIs(type(got), type(value))

    @local_only("values kept by reference live in one process")
    def test_by_reference(self):
        S = Store()
        fn = lambda x: x + 1  # noqa: E731 -- pickle refuses lambdas

        class Local:
            def __init__(self):
                self.items = [1]

        got = roundtrip(S, fn)
        self.assertIs(got, fn)  # as deepcopy does with functions
        obj = Local()
        got = roundtrip(S, obj)
        self.assertIsInstance(got, Local)
        self.assertIsNot(got, obj)  # copied at commit and at checkout
        obj.items.append(2)
        self.assertEqual(got.items, [1])
        got.items.append(3)
        self.assertEqual(S.usevar("k").value.items, [1])
        got = roundtrip(S, {"f": fn, "n": 1})
        self.assertIs(got["f"], fn)

    @local_only("values kept by reference live in one process")
    def test_references_swept(self):
        S = Store()
        v = S.usevar("k")
        for i in range(3000):
            v.set(lambda i=i: i)
            v.commit()
        self.assertLessEqual(axstm._axstm._sweep_refs(), 1)
        self.assertEqual(S.usevar("k").value(), 2999)
        del v, S
        self.assertEqual(axstm._axstm._sweep_refs(), 0)


class Errors(unittest.TestCase):
    def test_addresses(self):
        with self.assertRaises(axstm.InvalidArgument) as cm:
            Store("bogus://x")
        self.assertIsInstance(cm.exception, ValueError)
        self.assertEqual(cm.exception.code, -5)
        with self.assertRaises(TypeError):
            Store(5)
        self.assertFalse(Store("mem:").remote)
        self.assertEqual(axstm.strerror(-1),
                         "a key was committed by someone else since it was checked out")

    def test_bad_versions(self):
        S = Store()
        v = S.usevar("k")
        v.version = "one"
        with self.assertRaises(TypeError):
            v.commit()
        v.version = -1
        with self.assertRaises(TypeError):
            v.commit()
        v.version = 0
        v.commit()
        with self.assertRaises(TypeError):
            S.set_values({"k": 1})

    def test_bad_calls_raise(self):
        S = Store()
        bad = [
            lambda: S.usevar(),
            lambda: S.usevar("k", True, 3),
            lambda: S.usevar("k", nonsense=1),
            lambda: S.usevar({}),
            lambda: S.using("a", []),
            lambda: S.set("k"),
            lambda: S.set_values(5),
            lambda: S.delete([]),
            lambda: axstm.Value(1, 2),
            lambda: axstm.Value(1, 2, None, "k").commit(),
            lambda: axstm.Collection().commit(),
            lambda: TVar(store=5),
            lambda: TVar(key=[]),
            lambda: atomically(5),
            lambda: atomically(lambda: 1, store="mem:"),
            lambda: axstm.strerror("x"),
        ]
        for i, call in enumerate(bad):
            with self.assertRaises(Exception, msg=str(i)):
                call()
        v = S.usevar("k")
        del v.value
        with self.assertRaises(AttributeError):
            v.commit()
        v = S.usevar("k")
        v.version = 2**70
        with self.assertRaises(TypeError):
            v.commit()
        D = S.using("a")
        del D["a"].value
        with self.assertRaises(AttributeError):
            D.commit()
        self.assertIsNone(axstm.Collection({"x": S.usevar("x")}, ).set_store(S))
        self.assertEqual(S.usevar("x").version, 0)

    def test_hierarchy(self):
        for name, builtin in (("InvalidArgument", ValueError), ("TooBig", ValueError),
                              ("OutOfMemory", MemoryError), ("NoValue", LookupError),
                              ("WrongType", TypeError), ("Timeout", TimeoutError),
                              ("StoreIOError", OSError), ("InDoubt", OSError),
                              ("NoTransaction", RuntimeError)):
            cls = getattr(axstm, name)
            self.assertTrue(issubclass(cls, axstm.Error), name)
            self.assertTrue(issubclass(cls, builtin), name)
        self.assertFalse(issubclass(axstm.Retry, Exception))


if __name__ == "__main__":
    unittest.main()
