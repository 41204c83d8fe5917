/* SPDX-License-Identifier: MIT */
/*
 * pyaxstm.h -- what the files of the Python extension (axstm._axstm) share.
 *
 * The extension is written against libaxstm's public header only, like any
 * other program.  Its parts:
 *   module.c  the module, its exceptions, the codes-to-exceptions map, the
 *             registry of values kept by reference, waiting helpers;
 *   codec.c   Python values to bytes and back, Python keys to key names;
 *   store.c   Axon's Store, Value and Collection;
 *   stm.c     the stm package's TVar, atomically and retry.
 *
 * The GIL.  A checkout or commit on an in-process store takes tens of
 * nanoseconds, less than giving the GIL away and taking it back, so those
 * calls hold it.  A store opened by address answers over the network:
 * there every library call runs with the GIL released (PYAXSTM_CALL).
 * Waiting (for a watch, or between BUSY_RETRY answers) always releases it.
 */
#ifndef PYAXSTM_H
#define PYAXSTM_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <axstm.h>

#include <stdatomic.h>
#include <stdint.h>

/* ------------------------------------------------------------------ */
/* Objects                                                            */
/* ------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD axstm_store *s;
    /* Opened by a network address: library calls release the GIL, values
     * that only this process could read (kept by reference) are refused. */
    int remote;
    PyObject *address; /* str, or None for an in-process store */
    /* Names (bytes) of the keys this object saw created, in that order:
     * dump() lists keys in the order the original's dict kept them. */
    PyObject *created;
    PyObject *weakreflist;
    PyObject *dict; /* instance attributes (Axon programs set their own) */
} StoreObject;

typedef struct CollectionObject CollectionObject;

typedef struct {
    PyObject_HEAD
        /* Axon's four public attributes, plain attributes as in the original. */
        PyObject *version;
    PyObject *value;
    PyObject *store;
    PyObject *key;
    /* The checkout this Value came from, or NULL (a clone, or made by the
     * caller): commits go through it while .version still matches it. */
    axstm_value *h;
    /* The handle of the collection that lent h (h is then not this
     * object's to free; see HolderObject in store.c). */
    PyObject *owner;
    /* Set while a commit uses h, so that a second thread committing the
     * same Value (possible while the GIL is released, or without one)
     * gets an error instead of a race. */
    _Atomic int busy;
    PyObject *dict;
} ValueObject;

struct CollectionObject {
    PyDictObject dict;
    axstm_collection *c; /* borrowed from holder */
    PyObject *holder;
    PyObject *store;
    /* The Values lent by c, in c's order, and the user's key of each:
     * set_values() takes the fast path while the dict still maps those
     * keys to those Values. */
    PyObject *slots;
    PyObject *slotkeys;
    _Atomic int busy;
};

extern PyTypeObject PyAxstm_StoreType;
extern PyTypeObject PyAxstm_ValueType;
extern PyTypeObject PyAxstm_CollectionType;
extern PyTypeObject PyAxstm_TVarType;

/* ------------------------------------------------------------------ */
/* module.c                                                           */
/* ------------------------------------------------------------------ */

extern PyObject *PyAxstm_Error;
extern PyObject *PyAxstm_ConcurrentUpdate;
extern PyObject *PyAxstm_BusyRetry;
extern PyObject *PyAxstm_Retry;
extern PyObject *PyAxstm_NoTransaction;
extern PyObject *PyAxstm_Abort;

/* Raises the exception that stands for an axstm code; returns NULL. */
PyObject *pyaxstm_raise(int code);
/* The same, returning -1 (for int-returning paths). */
int pyaxstm_raise_int(int code);

/* Waits before trying a BUSY_RETRY call again, the GIL released: a yield
 * the first times, then sleeps that grow to a millisecond.  Returns 0 to
 * go on, -1 (exception set) on a signal's exception or once the lock has
 * stayed busy for PYAXSTM_BUSY_SECONDS (BusyRetry, which the caller then
 * sees: a lock held that long is held by a stuck program, not by a
 * commit in flight).  Start each call's backoff zeroed. */
#define PYAXSTM_BUSY_SECONDS 10
typedef struct {
    unsigned attempt;
    int64_t start_ns;
} pyaxstm_backoff;
int pyaxstm_busy_wait(pyaxstm_backoff *b);

/* Python helpers the C code calls: copy.deepcopy, pickle.dumps/loads, and
 * the key mapping written in Python (axstm._keys). */
extern PyObject *pyaxstm_deepcopy;
extern PyObject *pyaxstm_pickle_dumps;
extern PyObject *pyaxstm_pickle_loads;
extern PyObject *pyaxstm_key_name;
extern PyObject *pyaxstm_key_from_name;

/* The registry of values kept by reference (see codec.c). */
#define PYAXSTM_TOKEN_LEN 16
extern unsigned char pyaxstm_ref_token[PYAXSTM_TOKEN_LEN];
/* Keeps a deep copy of obj; returns its id, or -1 with an exception. */
int64_t pyaxstm_ref_put(PyObject *obj);
/* Returns a new deep copy of the object kept under id, or NULL. */
PyObject *pyaxstm_ref_get(int64_t id);
/* Marks id as written by a running transaction (kept by every sweep until
 * unpinned), and undoes that. */
int pyaxstm_ref_pin(int64_t id);
void pyaxstm_ref_unpin(int64_t id);
/* Registers an in-process store whose values a sweep must look at. */
int pyaxstm_ref_track_store(PyObject *store);

/* ------------------------------------------------------------------ */
/* codec.c                                                            */
/* ------------------------------------------------------------------ */

/* An encoded value: small ones in buf, larger ones on the heap or
 * borrowed from a bytes object (a pickle) that the buffer keeps. */
typedef struct {
    const char *data;
    Py_ssize_t len;
    char buf[64];
    char *heap;
    PyObject *keep;
    int64_t ref; /* the registry id when kept by reference, else -1 */
} pyaxstm_buf;

/* Encodes obj.  remote: the value goes to another process, so keeping it
 * by reference is refused.  Returns 0, or -1 with an exception set.
 * Release the buffer with pyaxstm_buf_release either way. */
int pyaxstm_encode(PyObject *obj, int remote, pyaxstm_buf *out);
void pyaxstm_buf_release(pyaxstm_buf *b);
/* Decodes bytes of the store (NULL: no value, None) into a new object. */
PyObject *pyaxstm_decode(const void *data, size_t len);

/* A key's name in the store.  *name points into the key itself (a str
 * that is a valid key) or into *keep, a new reference to release. */
int pyaxstm_key(PyObject *key, const char **name, PyObject **keep);

/* ------------------------------------------------------------------ */
/* store.c, stm.c                                                     */
/* ------------------------------------------------------------------ */

/* Runs a library call with the GIL released when the store is remote. */
#define PYAXSTM_CALL(store, rc, call)                         \
    do {                                                      \
        if ((store)->remote) {                                \
            PyThreadState *pyaxstm_ts_ = PyEval_SaveThread(); \
            (rc) = (call);                                    \
            PyEval_RestoreThread(pyaxstm_ts_);                \
        } else {                                              \
            (rc) = (call);                                    \
        }                                                     \
    } while (0)

/* Checks name out, waiting out BUSY_RETRY: 0, or -1 with an exception. */
int pyaxstm_checkout(StoreObject *st, const char *name, axstm_value **h);
/* Sets h to obj's encoding: 0, or -1 with an exception. */
int pyaxstm_set_encoded(StoreObject *st, axstm_value *h, PyObject *obj);
/* Commits h, waiting out BUSY_RETRY: 0, or -1 with an exception
 * (ConcurrentUpdate for a conflict). */
int pyaxstm_commit(StoreObject *st, axstm_value *h);

/* Records that store st saw name created (dump order). */
int pyaxstm_store_saw_created(StoreObject *st, const char *name);

/* The default store of TVars and atomically (created at import). */
extern StoreObject *pyaxstm_default_store;

int pyaxstm_stm_init(PyObject *module);
int pyaxstm_store_init(PyObject *module);

#endif /* PYAXSTM_H */
