/* SPDX-License-Identifier: MIT */
/*
 * module.c -- the module axstm._axstm: its exceptions, the map from axstm
 * codes to them, waiting out BUSY_RETRY, and the registry of values kept by
 * reference.
 *
 * The module keeps its state in C globals and static types, so it declares
 * that it cannot be loaded into several interpreters (3.12 and later).  It
 * declares free-threading support (3.13 and later): the globals are set once
 * at import or are atomics, the registry is a dict (locked by the
 * interpreter itself), and every handle a Python object holds is guarded by
 * that object's busy flag.
 */
#include "pyaxstm.h"

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

PyObject *PyAxstm_Error;
PyObject *PyAxstm_ConcurrentUpdate;
PyObject *PyAxstm_BusyRetry;
PyObject *PyAxstm_Retry;
PyObject *PyAxstm_NoTransaction;
PyObject *PyAxstm_Abort;

/* One exception class per code that can reach Python.  Each also derives
 * from the builtin exception a Python programmer would catch for it. */
static PyObject *exc_invalid, *exc_toobig, *exc_nomem, *exc_novalue, *exc_type, *exc_timeout,
    *exc_io, *exc_indoubt;

PyObject *pyaxstm_deepcopy;
PyObject *pyaxstm_pickle_dumps;
PyObject *pyaxstm_pickle_loads;
PyObject *pyaxstm_key_name;
PyObject *pyaxstm_key_from_name;

PyObject *pyaxstm_raise(int code)
{
    PyObject *cls;
    switch (code) {
    case AXSTM_CONCURRENT_UPDATE:
        cls = PyAxstm_ConcurrentUpdate;
        break;
    case AXSTM_BUSY_RETRY:
        cls = PyAxstm_BusyRetry;
        break;
    case AXSTM_ETIMEDOUT:
        cls = exc_timeout;
        break;
    case AXSTM_EINVAL:
        cls = exc_invalid;
        break;
    case AXSTM_E2BIG:
        cls = exc_toobig;
        break;
    case AXSTM_ENOMEM:
        cls = exc_nomem;
        break;
    case AXSTM_ENOVALUE:
        cls = exc_novalue;
        break;
    case AXSTM_ETYPE:
        cls = exc_type;
        break;
    case AXSTM_EIO:
        cls = exc_io;
        break;
    case AXSTM_EINDOUBT:
        cls = exc_indoubt;
        break;
    default:
        cls = PyAxstm_Error;
        break;
    }
    PyObject *exc = PyObject_CallFunction(cls, "s", axstm_strerror(code));
    if (exc == NULL)
        return NULL;
    PyObject *num = PyLong_FromLong(code);
    if (num == NULL || PyObject_SetAttrString(exc, "code", num) < 0) {
        Py_XDECREF(num);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(num);
    PyErr_SetObject(cls, exc);
    Py_DECREF(exc);
    return NULL;
}

int pyaxstm_raise_int(int code)
{
    pyaxstm_raise(code);
    return -1;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int pyaxstm_busy_wait(pyaxstm_backoff *b)
{
    if (b->attempt == 0)
        b->start_ns = now_ns();
    unsigned n = b->attempt++;
    PyThreadState *ts = PyEval_SaveThread();
    if (n < 8) {
        sched_yield();
    } else {
        /* 2 us doubling to about a millisecond: long enough to let a
         * commit in flight on another core finish, short enough not to
         * be seen. */
        unsigned shift = n - 8 < 9 ? n - 8 : 9;
        struct timespec ts_sleep = {0, 2000L << shift};
        nanosleep(&ts_sleep, NULL);
    }
    PyEval_RestoreThread(ts);
    if (PyErr_CheckSignals() < 0)
        return -1;
    if (n >= 8 && now_ns() - b->start_ns > (int64_t)PYAXSTM_BUSY_SECONDS * 1000000000) {
        pyaxstm_raise(AXSTM_BUSY_RETRY);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Values kept by reference                                           */
/* ------------------------------------------------------------------ */

/*
 * What pickle cannot handle (a lambda, an instance of a local class) is
 * kept in this process: the store holds a tag, the process's random token
 * and an id, and the registry maps the id to a deep copy taken at commit;
 * a checkout deep-copies it again.  That is what the original did for every
 * value (copy.deepcopy at commit and at checkout), so such values behave as
 * they did there.  Another process cannot read them (the token differs):
 * stores opened by address refuse them instead.
 *
 * Entries are swept when the registry has doubled since the last sweep: an
 * id is dropped when no in-process store holds it any more, it is not
 * pinned by a running transaction, and it was made before the previous
 * sweep (so a checkout that just read it has long decoded it: decoding
 * holds the GIL from the read to the lookup).
 */
unsigned char pyaxstm_ref_token[PYAXSTM_TOKEN_LEN];
static PyObject *refs;    /* int id -> object */
static PyObject *pinned;  /* int id -> pin count */
static PyObject *tracked; /* weak references to in-process stores */
static Py_ssize_t tracked_prune_at = 64;
static _Atomic int64_t next_ref_id = 1;
static int64_t young_from = 1;
static Py_ssize_t sweep_at = 1024;

static PyObject *weak_target(PyObject *wr)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *obj = NULL;
    if (PyWeakref_GetRef(wr, &obj) < 0)
        PyErr_Clear();
    return obj;
#else
    PyObject *obj = PyWeakref_GetObject(wr);
    if (obj == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (obj == Py_None)
        return NULL;
    Py_INCREF(obj);
    return obj;
#endif
}

/* Drops the weak references whose store is gone. */
static int prune_tracked(void)
{
    PyObject *alive = PyList_New(0);
    if (alive == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(tracked); i++) {
        PyObject *wr = PyList_GET_ITEM(tracked, i);
        PyObject *obj = weak_target(wr);
        if (obj == NULL)
            continue;
        Py_DECREF(obj);
        if (PyList_Append(alive, wr) < 0) {
            Py_DECREF(alive);
            return -1;
        }
    }
    int rc = PyList_SetSlice(tracked, 0, PyList_GET_SIZE(tracked), alive);
    Py_DECREF(alive);
    return rc;
}

int pyaxstm_ref_track_store(PyObject *store)
{
    if (PyList_GET_SIZE(tracked) >= tracked_prune_at) {
        if (prune_tracked() < 0)
            return -1;
        tracked_prune_at = 2 * PyList_GET_SIZE(tracked) + 64;
    }
    PyObject *wr = PyWeakref_NewRef(store, NULL);
    if (wr == NULL)
        return -1;
    int rc = PyList_Append(tracked, wr);
    Py_DECREF(wr);
    return rc;
}

static int collect_ref(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    (void)key;
    (void)version;
    const unsigned char *p = data;
    if (p == NULL || len != 1 + PYAXSTM_TOKEN_LEN + 8 || p[0] != 'r' ||
        memcmp(p + 1, pyaxstm_ref_token, PYAXSTM_TOKEN_LEN) != 0)
        return 0;
    int64_t id;
    memcpy(&id, p + 1 + PYAXSTM_TOKEN_LEN, 8);
    PyObject *num = PyLong_FromLongLong(id);
    if (num == NULL)
        return -1;
    int rc = PySet_Add((PyObject *)arg, num);
    Py_DECREF(num);
    return rc < 0 ? -1 : 0;
}

static int sweep(void)
{
    if (prune_tracked() < 0)
        return -1;
    PyObject *live = PySet_New(NULL);
    if (live == NULL)
        return -1;
    int64_t young = young_from;
    young_from = atomic_load(&next_ref_id);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(tracked); i++) {
        StoreObject *st = (StoreObject *)weak_target(PyList_GET_ITEM(tracked, i));
        if (st == NULL)
            continue;
        int rc = st->s != NULL ? axstm_store_foreach(st->s, collect_ref, live) : AXSTM_OK;
        Py_DECREF(st);
        if (rc != AXSTM_OK) {
            if (!PyErr_Occurred())
                pyaxstm_raise(rc);
            Py_DECREF(live);
            return -1;
        }
    }
    PyObject *ids = PyDict_Keys(refs);
    if (ids == NULL) {
        Py_DECREF(live);
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(ids) && rc == 0; i++) {
        PyObject *id = PyList_GET_ITEM(ids, i);
        if (PyLong_AsLongLong(id) >= young)
            continue;
        int in_live = PySet_Contains(live, id);
        int in_pinned = PyDict_Contains(pinned, id);
        if (in_live < 0 || in_pinned < 0)
            rc = -1;
        else if (!in_live && !in_pinned)
            rc = PyDict_DelItem(refs, id);
    }
    Py_DECREF(ids);
    Py_DECREF(live);
    Py_ssize_t n = PyDict_GET_SIZE(refs);
    sweep_at = n * 2 > 1024 ? n * 2 : 1024;
    return rc;
}

int64_t pyaxstm_ref_put(PyObject *obj)
{
    PyObject *copy = PyObject_CallOneArg(pyaxstm_deepcopy, obj);
    if (copy == NULL)
        return -1;
    int64_t id = atomic_fetch_add(&next_ref_id, 1);
    PyObject *num = PyLong_FromLongLong(id);
    if (num == NULL) {
        Py_DECREF(copy);
        return -1;
    }
    int rc = PyDict_SetItem(refs, num, copy);
    Py_DECREF(num);
    Py_DECREF(copy);
    if (rc < 0)
        return -1;
#ifndef Py_GIL_DISABLED
    /* Without a GIL a checkout could read an id and look it up while a
     * sweep runs in between: there the registry only grows. */
    if (PyDict_GET_SIZE(refs) >= sweep_at && sweep() < 0)
        return -1;
#endif
    return id;
}

PyObject *pyaxstm_ref_get(int64_t id)
{
    PyObject *num = PyLong_FromLongLong(id);
    if (num == NULL)
        return NULL;
    PyObject *obj = PyDict_GetItemWithError(refs, num);
    Py_DECREF(num);
    if (obj == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyAxstm_Error, "a value kept by reference is no longer there");
        return NULL;
    }
    Py_INCREF(obj); /* deepcopy may run code that drops the registry's */
    PyObject *copy = PyObject_CallOneArg(pyaxstm_deepcopy, obj);
    Py_DECREF(obj);
    return copy;
}

int pyaxstm_ref_pin(int64_t id)
{
    PyObject *num = PyLong_FromLongLong(id);
    if (num == NULL)
        return -1;
    PyObject *count = PyDict_GetItemWithError(pinned, num);
    long n = count != NULL ? PyLong_AsLong(count) : 0;
    PyObject *next = PyErr_Occurred() ? NULL : PyLong_FromLong(n + 1);
    int rc = next != NULL ? PyDict_SetItem(pinned, num, next) : -1;
    Py_XDECREF(next);
    Py_DECREF(num);
    return rc;
}

void pyaxstm_ref_unpin(int64_t id)
{
    PyObject *num = PyLong_FromLongLong(id);
    if (num == NULL) {
        PyErr_Clear();
        return;
    }
    PyObject *count = PyDict_GetItemWithError(pinned, num);
    if (count != NULL) {
        long n = PyLong_AsLong(count);
        PyObject *next = n > 1 ? PyLong_FromLong(n - 1) : NULL;
        if (next != NULL)
            PyDict_SetItem(pinned, num, next);
        else
            PyDict_DelItem(pinned, num);
        Py_XDECREF(next);
    }
    Py_DECREF(num);
    PyErr_Clear();
}

static int draw_token(void)
{
    PyObject *os = PyImport_ImportModule("os");
    if (os == NULL)
        return -1;
    PyObject *bytes = PyObject_CallMethod(os, "urandom", "i", PYAXSTM_TOKEN_LEN);
    Py_DECREF(os);
    if (bytes == NULL)
        return -1;
    memcpy(pyaxstm_ref_token, PyBytes_AS_STRING(bytes), PYAXSTM_TOKEN_LEN);
    Py_DECREF(bytes);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Module-level functions                                             */
/* ------------------------------------------------------------------ */

static PyObject *mod_refs_held(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromSsize_t(PyDict_GET_SIZE(refs));
}

static PyObject *mod_sweep_refs(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    /* Twice: the first sweep only ages what was made since the last. */
    if (sweep() < 0 || sweep() < 0)
        return NULL;
    return PyLong_FromSsize_t(PyDict_GET_SIZE(refs));
}

static PyObject *mod_strerror(PyObject *self, PyObject *arg)
{
    (void)self;
    int code = PyLong_AsLong(arg);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    return PyUnicode_FromString(axstm_strerror(code));
}

static PyMethodDef module_methods[] = {
    {"_refs_held", mod_refs_held, METH_NOARGS,
     "How many values the registry of values kept by reference holds."},
    {"_sweep_refs", mod_sweep_refs, METH_NOARGS,
     "Drops the values kept by reference that no store holds any more; returns how many "
     "are left."},
    {"strerror", mod_strerror, METH_O, "strerror(code) -> the library's phrase for an axstm code."},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ */
/* Exceptions                                                         */
/* ------------------------------------------------------------------ */

static PyObject *new_exception(PyObject *module, const char *name, const char *doc, PyObject *base1,
                               PyObject *base2)
{
    char qualified[64];
    snprintf(qualified, sizeof qualified, "axstm.%s", name);
    PyObject *bases = base2 != NULL ? PyTuple_Pack(2, base1, base2) : PyTuple_Pack(1, base1);
    if (bases == NULL)
        return NULL;
    PyObject *cls = PyErr_NewExceptionWithDoc(qualified, doc, bases, NULL);
    Py_DECREF(bases);
    if (cls == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, name, cls) < 0) {
        Py_DECREF(cls);
        return NULL;
    }
    return cls;
}

static int add_exceptions(PyObject *m)
{
    PyAxstm_Error = new_exception(
        m, "Error", "Base of the exceptions axstm raises for its codes; .code is the axstm code.",
        PyExc_Exception, NULL);
    if (PyAxstm_Error == NULL)
        return -1;
    PyAxstm_ConcurrentUpdate = new_exception(
        m, "ConcurrentUpdate",
        "A key was committed by someone else since it was checked out: redo the work.",
        PyAxstm_Error, NULL);
    PyAxstm_BusyRetry = new_exception(
        m, "BusyRetry", "A lock stayed busy; nothing changed: try again.", PyAxstm_Error, NULL);
    exc_invalid = new_exception(m, "InvalidArgument", "axstm refused an argument (EINVAL).",
                                PyAxstm_Error, PyExc_ValueError);
    exc_toobig = new_exception(m, "TooBig", "A key or value is over axstm's limit (E2BIG).",
                               PyAxstm_Error, PyExc_ValueError);
    exc_nomem =
        new_exception(m, "OutOfMemory", "axstm ran out of memory, or the server did (ENOMEM).",
                      PyAxstm_Error, PyExc_MemoryError);
    exc_novalue = new_exception(m, "NoValue", "The key has no value (ENOVALUE).", PyAxstm_Error,
                                PyExc_LookupError);
    exc_type = new_exception(m, "WrongType", "The value has the wrong size for its type (ETYPE).",
                             PyAxstm_Error, PyExc_TypeError);
    exc_timeout = new_exception(m, "Timeout", "A deadline passed first (ETIMEDOUT).", PyAxstm_Error,
                                PyExc_TimeoutError);
    exc_io = new_exception(m, "StoreIOError",
                           "The store's server could not be reached or failed the call (EIO); "
                           "nothing changed.",
                           PyAxstm_Error, PyExc_OSError);
    if (exc_io == NULL)
        return -1;
    exc_indoubt = new_exception(
        m, "InDoubt",
        "The connection was lost after a commit was sent (EINDOUBT): it took effect entirely or "
        "not at all; check out again to see which.",
        exc_io, NULL);
    PyAxstm_NoTransaction = new_exception(
        m, "NoTransaction", "A TVar, retry() or or_else() was used outside atomically().",
        PyAxstm_Error, PyExc_RuntimeError);
    /* Not an Exception: `except Exception` in a transaction body must not
     * swallow a retry, nor the extension's own abort of a stale run. */
    PyAxstm_Retry = new_exception(
        m, "Retry", "Raised by retry(): atomically() waits until a TVar read changes.",
        PyExc_BaseException, NULL);
    PyAxstm_Abort =
        new_exception(m, "_Abort", "Internal: the transaction's snapshot is gone; it runs again.",
                      PyExc_BaseException, NULL);
    if (PyAxstm_ConcurrentUpdate == NULL || PyAxstm_BusyRetry == NULL || exc_invalid == NULL ||
        exc_toobig == NULL || exc_nomem == NULL || exc_novalue == NULL || exc_type == NULL ||
        exc_timeout == NULL || exc_indoubt == NULL || PyAxstm_NoTransaction == NULL ||
        PyAxstm_Retry == NULL || PyAxstm_Abort == NULL)
        return -1;
    return 0;
}

static PyObject *import_attr(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL)
        return NULL;
    PyObject *attr = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return attr;
}

static int module_exec(PyObject *m)
{
    if (add_exceptions(m) < 0)
        return -1;
    pyaxstm_deepcopy = import_attr("copy", "deepcopy");
    pyaxstm_pickle_dumps = import_attr("pickle", "dumps");
    pyaxstm_pickle_loads = import_attr("pickle", "loads");
    pyaxstm_key_name = import_attr("axstm._keys", "key_name");
    pyaxstm_key_from_name = import_attr("axstm._keys", "key_from_name");
    if (pyaxstm_deepcopy == NULL || pyaxstm_pickle_dumps == NULL || pyaxstm_pickle_loads == NULL ||
        pyaxstm_key_name == NULL || pyaxstm_key_from_name == NULL)
        return -1;
    refs = PyDict_New();
    pinned = PyDict_New();
    tracked = PyList_New(0);
    if (refs == NULL || pinned == NULL || tracked == NULL || draw_token() < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "KEY_MAX", AXSTM_KEY_MAX) < 0 ||
        PyModule_AddIntConstant(m, "VALUE_MAX", (long)AXSTM_VALUE_MAX) < 0 ||
        PyModule_AddStringConstant(m, "library_version", axstm_version_string()) < 0)
        return -1;
    if (pyaxstm_store_init(m) < 0 || pyaxstm_stm_init(m) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    /* The state is in C globals: one interpreter per process. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "axstm._axstm",
    .m_doc = "The C core of the axstm package: libaxstm's stores, Axon's Store, Value and "
             "Collection, and the stm package's TVar and atomically.",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__axstm(void);

PyMODINIT_FUNC PyInit__axstm(void)
{
    return PyModuleDef_Init(&module_def);
}
