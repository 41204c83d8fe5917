# SPDX-License-Identifier: MIT
"""python_bench.py -- the Python bindings next to the pure-Python original.

Prints one table: for each operation and thread count, microseconds per
operation (wall time / operations of all threads, the best of three runs)
for the
original Axon.STM and for axstm's drop-in, and how many times faster the
drop-in is.

The original is Kamaelia's Axon/STM.py when AXON_STM_PATH names it (the
file, or a directory holding Axon/STM.py), loaded from there under another
name and never copied into this tree.  Without it, the "original" column is
a pure-Python store written here with the original's algorithm: one
threading.Lock taken with acquire(0), a dict of Values, copy.deepcopy at
checkout and at commit.

    make bench-python [BENCH_ARGS=seconds]
    AXON_STM_PATH=/path/to/Axon/STM.py make bench-python

The operations:
    usevar+commit   usevar, set an int, commit (one key per thread)
    using2+commit   using of 2 keys, set both, commit
    dict100         usevar, set a 100-entry dict, commit
    atomically      (axstm only) a transaction reading and writing a TVar
"""

import copy
import importlib.util
import os
import sys
import threading
import time

import axstm


class _Busy(Exception):
    pass


class _Conflict(Exception):
    pass


class ReValue:
    """A Value of the re-implementation."""

    def __init__(self, version, value, store, key):
        self.version, self.value, self.store, self.key = version, value, store, key

    def set(self, value):
        self.value = value

    def commit(self):
        self.store.set(self.key, self)


class ReCollection(dict):
    def set_store(self, store):
        self.store = store

    def commit(self):
        self.store.set_values(self)


class ReStore:
    """The original's algorithm, written anew: a dict under one lock that
    is never waited for (acquire(0)), deep copies in and out."""

    def __init__(self):
        self.store = {}
        self.lock = threading.Lock()

    def _checkout(self, key):
        if key not in self.store:
            self.store[key] = ReValue(0, None, self, key)
        held = self.store[key]
        return ReValue(held.version, copy.deepcopy(held.value), self, key)

    def _publish(self, key, value):
        self.store[key] = ReValue(value.version + 1, copy.deepcopy(value.value), self, key)
        value.version += 1

    def usevar(self, key):
        if not self.lock.acquire(False):
            raise _Busy()
        try:
            return self._checkout(key)
        finally:
            self.lock.release()

    def set(self, key, value):
        if not self.lock.acquire(False):
            raise _Busy()
        try:
            if self.store[key].version > value.version:
                raise _Conflict()
            self._publish(key, value)
        finally:
            self.lock.release()

    def using(self, *keys):
        if not self.lock.acquire(False):
            raise _Busy()
        try:
            d = ReCollection()
            for key in keys:
                d[key] = self._checkout(key)
            d.set_store(self)
            return d
        finally:
            self.lock.release()

    def set_values(self, d):
        if not self.lock.acquire(False):
            raise _Busy()
        try:
            for key in d:
                if self.store[key].version > d[key].version:
                    raise _Conflict()
            for key in d:
                self._publish(key, d[key])
        finally:
            self.lock.release()


def load_original():
    """(name, Store class, exceptions to retry on)."""
    path = os.environ.get("AXON_STM_PATH")
    if not path:
        return "re-implemented", ReStore, (_Busy, _Conflict)
    if os.path.isdir(path):
        path = os.path.join(path, "Axon", "STM.py")
    spec = importlib.util.spec_from_file_location("original_axon_stm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return "Axon.STM", module.Store, (module.BusyRetry, module.ConcurrentUpdate)


def op_usevar(store, tid, retry_on):
    key = "counter.%d" % tid

    def op():
        while True:
            try:
                v = store.usevar(key)
                v.set(v.version)
                v.commit()
                return
            except retry_on:
                pass
    return op


def op_using(store, tid, retry_on):
    a, b = "a.%d" % tid, "b.%d" % tid

    def op():
        while True:
            try:
                d = store.using(a, b)
                d[a].set(1)
                d[b].set(2)
                d.commit()
                return
            except retry_on:
                pass
    return op


DICT100 = {"key.%d" % i: i for i in range(100)}


def op_dict(store, tid, retry_on):
    key = "dict.%d" % tid

    def op():
        while True:
            try:
                v = store.usevar(key)
                v.set(DICT100)
                v.commit()
                return
            except retry_on:
                pass
    return op


def run(make_op, store, threads, seconds, retry_on):
    """Microseconds per operation, all threads together: the best of three
    runs, so that a burst of other work on the machine counts less."""
    return min(run_once(make_op, store, threads, seconds / 3, retry_on) for _ in range(3))


def run_once(make_op, store, threads, seconds, retry_on):
    ops = [make_op(store, t, retry_on) for t in range(threads)]
    counts = [0] * threads
    stop = threading.Event()
    start = threading.Barrier(threads + 1)

    def worker(i):
        op = ops[i]
        op()  # create the keys before the clock starts
        start.wait()
        n = 0
        while not stop.is_set():
            for _ in range(100):
                op()
            n += 100
        counts[i] = n

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    return elapsed * 1e6 / sum(counts)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    name, OriginalStore, retry_on = load_original()
    ours_retry = (axstm.BusyRetry, axstm.ConcurrentUpdate)
    print("Python %s, axstm %s; original: %s; %.1f s per row"
          % (sys.version.split()[0], axstm.library_version, name, seconds))
    print()
    print("%-15s %7s %14s %14s %9s" % ("operation", "threads", name + " us", "axstm us",
                                       "speedup"))
    rows = (("usevar+commit", op_usevar), ("using2+commit", op_using), ("dict100", op_dict))
    for label, make_op in rows:
        for threads in (1, 4):
            orig = run(make_op, OriginalStore(), threads, seconds, retry_on)
            ours = run(make_op, axstm.Store(), threads, seconds, ours_retry)
            print("%-15s %7d %14.3f %14.3f %8.1fx" % (label, threads, orig, ours, orig / ours))

    for threads in (1, 4):
        store = axstm.Store()
        tvars = [axstm.TVar(0, store=store) for _ in range(threads)]

        def make_op(_store, tid, _retry_on):
            v = tvars[tid]

            def body():
                v.set(v.get() + 1)

            return lambda: axstm.atomically(body, store)

        ours = run(make_op, store, threads, seconds, ())
        print("%-15s %7d %14s %14.3f %9s" % ("atomically", threads, "-", ours, "-"))


if __name__ == "__main__":
    main()
