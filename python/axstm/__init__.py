# SPDX-License-Identifier: MIT
"""axstm: software transactional memory on libaxstm.

Two interfaces on one C core (the extension axstm._axstm):

- Kamaelia's Axon.STM: Store, Value, Collection, ConcurrentUpdate and
  BusyRetry, as the original has them (Axon.STM re-exports these).
  Store(address) also opens the stores of axstm_store_open(3), e.g.
  Store("redis+unix:///run/redis.sock?prefix=app:"), shared between
  processes.
- The stm package's TVar, atomically, retry and or_else, plus TList and
  TDict built on them.

Keys are any hashable (dict equality: 1, 1.0 and True are one key); values
are anything copy.deepcopy accepts, stored as their pickle (with fast paths
for None, bool, int, float, str and bytes), and what pickle refuses is kept
by reference in this process.  See python/README for the details.
"""

import threading as _threading

from . import _axstm
from ._axstm import (
    KEY_MAX,
    VALUE_MAX,
    BusyRetry,
    Collection,
    ConcurrentUpdate,
    Error,
    InDoubt,
    InvalidArgument,
    NoTransaction,
    NoValue,
    OutOfMemory,
    Retry,
    StoreIOError,
    Timeout,
    TooBig,
    TVar,
    Value,
    WrongType,
    atomically,
    in_transaction,
    library_version,
    prefetch,
    retry,
    strerror,
)
from ._keys import key_from_name as _key_from_name

__all__ = [
    "Store", "Value", "Collection", "ConcurrentUpdate", "BusyRetry",
    "TVar", "atomically", "retry", "or_else", "in_transaction", "prefetch", "TList", "TDict",
    "Error", "InvalidArgument", "TooBig", "OutOfMemory", "NoValue", "WrongType",
    "Timeout", "StoreIOError", "InDoubt", "NoTransaction", "Retry",
    "default_store", "KEY_MAX", "VALUE_MAX", "library_version", "strerror",
]


class Store(_axstm.Store):
    """Store(address=None) -> a store of named, versioned values.

    With no address (or "mem:") the store lives in this process; any other
    address of axstm_store_open(3) opens a store kept in a server, e.g.
    "redis+unix:///path/to/socket?prefix=NAME:" or
    "redis://host:6379/0?prefix=NAME:".

    As in Axon: usevar(key) checks out a Value, using(*keys) a Collection;
    their commit() publishes them, raising ConcurrentUpdate when someone
    committed first.  BusyRetry is never raised for a lock held by a commit
    in flight (the call waits that out); only after a lock stayed held for
    seconds.  .lock is the original's attribute, kept for programs that
    touch it: nothing here takes it.
    """

    def __init__(self, address=None):
        self.lock = _threading.Lock()

    def _entries(self):
        """(key, Value) for every key, in the order this object saw them
        created (the original's dict order), then the others by name."""
        order = {name: i for i, name in enumerate(self._created)}
        raw = self._raw_items()
        raw.sort(key=lambda item: (0, order[item[0]], b"") if item[0] in order
                 else (1, 0, item[0]))
        entries = []
        for name, version, value in raw:
            key = _key_from_name(name)
            entries.append((key, Value(version, value, self, key)))
        return entries

    @property
    def store(self):
        """A snapshot dict of key -> Value (the original's .store, which
        programs read; changing it changes nothing)."""
        return dict(self._entries())

    def keys(self):
        """The keys of the store, as dump() lists them."""
        return [key for key, _ in self._entries()]

    def dump(self):
        """Prints every key and Value, exactly as Axon's dump() does."""
        print("DEBUG: Store dump ------------------------------")
        for key, value in self._entries():
            print("     ", key, ":", value)
        print()

    def atomically(self, fn):
        """atomically(fn, store=self)."""
        return atomically(fn, self)


default_store = Store()
_axstm._set_default_store(default_store)


def or_else(*fns):
    """Runs the first of fns that does not retry, and returns its result;
    the writes of those that retried are dropped.  Retries when all do."""
    if not in_transaction():
        raise NoTransaction("or_else() outside atomically()")
    for fn in fns:
        try:
            return atomically(fn)
        except Retry:
            pass
    return retry()


class TList:
    """A list in a TVar: every operation is transactional (call them inside
    atomically).  The list is stored whole, as a tuple, so each write
    copies it: meant for queues and small lists."""

    def __init__(self, items=(), store=None):
        self._var = TVar(tuple(items), store=store)

    def __len__(self):
        return len(self._var.get())

    def __iter__(self):
        return iter(self._var.get())

    def __getitem__(self, index):
        return self._var.get()[index]

    def __setitem__(self, index, value):
        items = list(self._var.get())
        items[index] = value
        self._var.set(tuple(items))

    def __delitem__(self, index):
        items = list(self._var.get())
        del items[index]
        self._var.set(tuple(items))

    def __repr__(self):
        return "TList(%r)" % (list(self._var.get()),)

    def append(self, value):
        self._var.set(self._var.get() + (value,))

    def extend(self, values):
        self._var.set(self._var.get() + tuple(values))

    def insert(self, index, value):
        items = list(self._var.get())
        items.insert(index, value)
        self._var.set(tuple(items))

    def pop(self, index=-1):
        items = list(self._var.get())
        value = items.pop(index)
        self._var.set(tuple(items))
        return value

    def remove(self, value):
        items = list(self._var.get())
        items.remove(value)
        self._var.set(tuple(items))

    def clear(self):
        self._var.set(())

    def index(self, value):
        return self._var.get().index(value)

    def count(self, value):
        return self._var.get().count(value)


class TDict:
    """A dict in a TVar: every operation is transactional (call them inside
    atomically).  Stored whole, so each write copies it."""

    def __init__(self, items=(), store=None):
        self._var = TVar(dict(items), store=store)

    def _get(self):
        return self._var.get()

    def __len__(self):
        return len(self._get())

    def __iter__(self):
        return iter(list(self._get()))

    def __contains__(self, key):
        return key in self._get()

    def __getitem__(self, key):
        return self._get()[key]

    def __setitem__(self, key, value):
        d = self._get()
        d[key] = value
        self._var.set(d)

    def __delitem__(self, key):
        d = self._get()
        del d[key]
        self._var.set(d)

    def __repr__(self):
        return "TDict(%r)" % (self._get(),)

    def get(self, key, default=None):
        return self._get().get(key, default)

    def keys(self):
        return list(self._get().keys())

    def values(self):
        return list(self._get().values())

    def items(self):
        return list(self._get().items())

    def pop(self, key, *default):
        d = self._get()
        value = d.pop(key, *default)
        self._var.set(d)
        return value

    def setdefault(self, key, default=None):
        d = self._get()
        if key in d:
            return d[key]
        d[key] = default
        self._var.set(d)
        return default

    def update(self, *args, **kwargs):
        d = self._get()
        d.update(*args, **kwargs)
        self._var.set(d)

    def clear(self):
        self._var.set({})
