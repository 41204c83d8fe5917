/* SPDX-License-Identifier: MIT */
/*
 * stm.c -- the stm package's TVar, atomically and retry on libaxstm's
 * transactions.
 *
 * atomically(fn) runs fn as the body of axstm_try_atomically, which never
 * sleeps: the wait for retry() happens here, on the watch it hands back,
 * polled in slices with the GIL released so that other Python threads run
 * meanwhile (the commit they make is what ends the wait) and Ctrl-C is
 * seen between slices.  axstm_atomically itself would block inside the
 * library, unable to give the GIL back or notice a signal.
 *
 * A body is Python code, so it ends in one of four ways, each mapped to
 * what the library expects of a body:
 *   it returns                    0: commit, and atomically returns its
 *                                 result;
 *   it raises Retry (retry())     AXSTM_RETRY: wait for a change;
 *   a read found its snapshot     the library's code (CONCURRENT_UPDATE
 *   gone                          or BUSY_RETRY): the run is dropped and
 *                                 the body runs again.  The read raises
 *                                 _Abort to unwind the body, and the code
 *                                 is remembered, so a body that swallows
 *                                 _Abort still ends as it must;
 *   it raises anything else       PY_EXCEPTION: roll back, and atomically
 *                                 raises it.
 * A nested atomically (or each alternative of or_else) runs as the first
 * branch of axstm_or_else, whose second branch only reports how the first
 * ended: that is how its writes are discarded when it raises or retries
 * while the enclosing body goes on.
 */
#include "pyaxstm.h"

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_READONLY READONLY
#endif

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* A code of ours, positive as the library asks of its callers' own:
 * "the body raised; the exception is kept in the context". */
#define PY_EXCEPTION 1

/* How long one slice of a wait for retry() lasts before signals are
 * checked: short enough for Ctrl-C to feel immediate. */
#define WAIT_SLICE_MS 50

struct raised {
    PyObject *type, *value, *tb;
};

struct txn_ctx {
    StoreObject *store;
    PyObject *fn;
    PyObject *result;
    struct raised exc;
    axstm_txn *tx;
    /* The library's code a read met (CONCURRENT_UPDATE, BUSY_RETRY):
     * whatever the body does next, this run ends with it. */
    int abort_code;
    int last_code; /* how the last run of the body ended */
    /* Set while the library runs with the GIL released (a remote store):
     * the body takes it back for the Python code. */
    PyThreadState *ts;
    /* Ids of values kept by reference that this run wrote: kept by every
     * sweep until the call ends. */
    PyObject *pins;
};

static _Thread_local struct txn_ctx *current;

static void raised_clear(struct raised *r)
{
    Py_CLEAR(r->type);
    Py_CLEAR(r->value);
    Py_CLEAR(r->tb);
}

/* How a call of Python code in a body ended, as a body's code; the result
 * or the exception is kept in *result or *exc. */
static int body_outcome(struct txn_ctx *ctx, PyObject *r, PyObject **result, struct raised *exc)
{
    if (ctx->abort_code != 0) {
        Py_XDECREF(r);
        PyErr_Clear();
        return ctx->abort_code;
    }
    if (r != NULL) {
        Py_XSETREF(*result, r);
        return 0;
    }
    if (PyErr_ExceptionMatches(PyAxstm_Retry)) {
        PyErr_Clear();
        return AXSTM_RETRY;
    }
    if (PyErr_ExceptionMatches(PyAxstm_Abort)) {
        PyErr_Clear();
        return AXSTM_CONCURRENT_UPDATE;
    }
    raised_clear(exc);
    PyErr_Fetch(&exc->type, &exc->value, &exc->tb);
    return PY_EXCEPTION;
}

static int body(axstm_txn *tx, void *arg)
{
    struct txn_ctx *ctx = arg;
    if (ctx->ts != NULL)
        PyEval_RestoreThread(ctx->ts);
    ctx->tx = tx;
    ctx->abort_code = 0;
    Py_CLEAR(ctx->result);
    raised_clear(&ctx->exc);
    struct txn_ctx *outer = current;
    current = ctx;
    PyObject *r = PyObject_CallNoArgs(ctx->fn);
    current = outer;
    int code = body_outcome(ctx, r, &ctx->result, &ctx->exc);
    ctx->last_code = code;
    ctx->tx = NULL;
    if (ctx->ts != NULL)
        ctx->ts = PyEval_SaveThread();
    return code;
}

/* ------------------------------------------------------------------ */
/* Nested transactions                                                */
/* ------------------------------------------------------------------ */

struct nested {
    struct txn_ctx *ctx;
    PyObject *fn;
    PyObject *result;
    struct raised exc;
    int raised; /* the first branch raised: its writes are gone, re-raise */
};

static int nested_first(axstm_txn *tx, void *arg)
{
    (void)tx;
    struct nested *n = arg;
    PyObject *r = PyObject_CallNoArgs(n->fn);
    int code = body_outcome(n->ctx, r, &n->result, &n->exc);
    if (code == PY_EXCEPTION) {
        /* Retrying is how or_else discards this branch's writes. */
        n->raised = 1;
        return AXSTM_RETRY;
    }
    return code;
}

static int nested_second(axstm_txn *tx, void *arg)
{
    (void)tx;
    struct nested *n = arg;
    return n->raised ? PY_EXCEPTION : AXSTM_RETRY;
}

static PyObject *run_nested(struct txn_ctx *ctx, PyObject *fn)
{
    struct nested n = {ctx, fn, NULL, {NULL, NULL, NULL}, 0};
    int rc = axstm_or_else(ctx->tx, nested_first, nested_second, &n);
    switch (rc) {
    case AXSTM_OK:
        return n.result != NULL ? n.result : Py_NewRef(Py_None);
    case PY_EXCEPTION:
        PyErr_Restore(n.exc.type, n.exc.value, n.exc.tb);
        Py_XDECREF(n.result);
        return NULL;
    case AXSTM_RETRY:
        PyErr_SetNone(PyAxstm_Retry);
        break;
    case AXSTM_CONCURRENT_UPDATE:
    case AXSTM_BUSY_RETRY:
        if (ctx->abort_code == 0)
            ctx->abort_code = rc;
        PyErr_SetNone(PyAxstm_Abort);
        break;
    default:
        pyaxstm_raise(rc);
        break;
    }
    raised_clear(&n.exc);
    Py_XDECREF(n.result);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* atomically                                                         */
/* ------------------------------------------------------------------ */

static void unpin_all(struct txn_ctx *ctx)
{
    if (ctx->pins == NULL)
        return;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(ctx->pins); i++)
        pyaxstm_ref_unpin(PyLong_AsLongLong(PyList_GET_ITEM(ctx->pins, i)));
    Py_CLEAR(ctx->pins);
}

/* Waits, the GIL released, until w's descriptor is readable: 0, or -1
 * with an exception (a signal handler's, or the poll's error). */
static int wait_watch(StoreObject *st, axstm_watch *w)
{
    struct pollfd pfd = {.fd = axstm_watch_fd(w), .events = POLLIN};
    for (;;) {
        PyThreadState *ts = PyEval_SaveThread();
        int n = poll(&pfd, 1, WAIT_SLICE_MS);
        int err = errno;
        PyEval_RestoreThread(ts);
        if (n > 0)
            return 0;
        if (n < 0 && err != EINTR) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
        (void)st;
    }
}

static PyObject *run_atomically(StoreObject *st, PyObject *fn)
{
    struct txn_ctx ctx = {.store = st, .fn = fn};
    pyaxstm_backoff b = {0, 0};
    for (;;) {
        axstm_watch *w = NULL;
        int rc;
        if (st->remote) {
            ctx.ts = PyEval_SaveThread();
            rc = axstm_try_atomically(st->s, body, &ctx, &w);
            PyEval_RestoreThread(ctx.ts);
            ctx.ts = NULL;
        } else {
            rc = axstm_try_atomically(st->s, body, &ctx, &w);
        }
        unpin_all(&ctx);
        switch (rc) {
        case AXSTM_OK: {
            PyObject *r = ctx.result != NULL ? ctx.result : Py_NewRef(Py_None);
            raised_clear(&ctx.exc);
            return r;
        }
        case PY_EXCEPTION:
            Py_CLEAR(ctx.result);
            PyErr_Restore(ctx.exc.type, ctx.exc.value, ctx.exc.tb);
            return NULL;
        case AXSTM_RETRY: {
            int waited = wait_watch(st, w);
            if (st->remote) {
                PyThreadState *ts = PyEval_SaveThread();
                axstm_watch_free(w);
                PyEval_RestoreThread(ts);
            } else {
                axstm_watch_free(w);
            }
            if (waited < 0)
                goto fail;
            b.attempt = 0;
            continue;
        }
        case AXSTM_BUSY_RETRY:
            /* 64 conflicts in a row: let the others finish first. */
            if (pyaxstm_busy_wait(&b) < 0)
                goto fail;
            continue;
        case AXSTM_EINVAL:
            if (ctx.last_code == AXSTM_RETRY) {
                PyErr_SetString(PyExc_ValueError,
                                "retry() in a transaction that read no TVar would wait for ever");
                goto fail;
            }
            pyaxstm_raise(rc);
            goto fail;
        default:
            pyaxstm_raise(rc);
            goto fail;
        }
    }
fail:
    Py_CLEAR(ctx.result);
    raised_clear(&ctx.exc);
    return NULL;
}

static StoreObject *store_arg(PyObject *store)
{
    if (store == NULL || store == Py_None)
        return pyaxstm_default_store;
    if (!PyObject_TypeCheck(store, &PyAxstm_StoreType)) {
        PyErr_Format(PyExc_TypeError, "store must be an axstm.Store, not %R", store);
        return NULL;
    }
    return (StoreObject *)store;
}

static PyObject *mod_atomically(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"fn", "store", NULL};
    PyObject *fn, *store = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:atomically", kwlist, &fn, &store))
        return NULL;
    if (current != NULL) {
        /* Inside a transaction: a nested one, on the same store. */
        if (store != NULL && store != Py_None && (StoreObject *)store != current->store) {
            PyErr_SetString(PyExc_ValueError,
                            "a transaction nested in another runs on the same store");
            return NULL;
        }
        return run_nested(current, fn);
    }
    StoreObject *st = store_arg(store);
    if (st == NULL)
        return NULL;
    Py_INCREF(st);
    PyObject *r = run_atomically(st, fn);
    Py_DECREF(st);
    return r;
}

static PyObject *mod_retry(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (current == NULL) {
        PyErr_SetString(PyAxstm_NoTransaction, "retry() outside atomically()");
        return NULL;
    }
    PyErr_SetNone(PyAxstm_Retry);
    return NULL;
}

static PyObject *mod_in_transaction(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyBool_FromLong(current != NULL);
}

/* ------------------------------------------------------------------ */
/* TVar                                                               */
/* ------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD StoreObject *store;
    PyObject *name; /* bytes: the key's name */
    /* Its key was made up for it (no key= given): deleted when the TVar
     * is collected, since nothing else can name it. */
    int anonymous;
    PyObject *weakreflist;
} TVarObject;

static _Atomic uint64_t tvar_serial;

/* A name no other TVar, in this process or another sharing a store, will
 * have: the registry token is random per process, the pid tells a fork's
 * child from its parent, and the serial counts. */
static PyObject *anonymous_name(void)
{
    char name[1 + 1 + 2 * PYAXSTM_TOKEN_LEN + 64];
    size_t at = 0;
    name[at++] = (char)0xff;
    name[at++] = 'v';
    for (int i = 0; i < PYAXSTM_TOKEN_LEN; i++)
        at += (size_t)snprintf(name + at, sizeof name - at, "%02x", pyaxstm_ref_token[i]);
    snprintf(name + at, sizeof name - at, ".%ld.%llu", (long)getpid(),
             (unsigned long long)atomic_fetch_add(&tvar_serial, 1));
    return PyBytes_FromString(name);
}

static PyObject *TVar_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"value", "store", "key", NULL};
    PyObject *value = Py_None, *store = NULL, *key = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OOO:TVar", kwlist, &value, &store, &key))
        return NULL;
    StoreObject *st = store_arg(store);
    if (st == NULL)
        return NULL;
    PyObject *name;
    if (key == NULL || key == Py_None) {
        name = anonymous_name();
    } else {
        const char *cname;
        PyObject *keep;
        if (pyaxstm_key(key, &cname, &keep) < 0)
            return NULL;
        name = keep != NULL ? keep : PyBytes_FromString(cname);
    }
    if (name == NULL)
        return NULL;
    TVarObject *self = (TVarObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(name);
        return NULL;
    }
    self->store = (StoreObject *)Py_NewRef((PyObject *)st);
    self->name = name;
    self->anonymous = key == NULL || key == Py_None;
    /* The initial value is committed at once, outside any transaction
     * running on this thread; a named key that has a value keeps it. */
    axstm_value *h;
    if (pyaxstm_checkout(st, PyBytes_AS_STRING(name), &h) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    int rc = 0;
    if (axstm_value_version(h) == 0 && axstm_value_data(h, NULL) == NULL) {
        rc = pyaxstm_set_encoded(st, h, value);
        if (rc == 0)
            rc = pyaxstm_commit(st, h);
        if (rc < 0 && !self->anonymous && PyErr_ExceptionMatches(PyAxstm_ConcurrentUpdate)) {
            PyErr_Clear(); /* another process gave it its first value */
            rc = 0;
        }
    }
    axstm_value_free(h);
    if (rc < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* Deletes the key of a collected TVar.  A deallocator may not raise, so a
 * failure is reported as unraisable and the key stays. */
static void delete_key(TVarObject *self)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    StoreObject *st = self->store;
    const char *name = PyBytes_AS_STRING(self->name);
    axstm_value *h = NULL;
    int rc = pyaxstm_checkout(st, name, &h);
    for (int attempt = 0; rc == 0 && attempt < 100; attempt++) {
        axstm_value_delete(h);
        rc = pyaxstm_commit(st, h);
        if (rc == 0 || !PyErr_ExceptionMatches(PyAxstm_ConcurrentUpdate))
            break;
        /* Written meanwhile (a transaction still holding the TVar's last
         * value): delete what is there now. */
        PyErr_Clear();
        int refreshed;
        PYAXSTM_CALL(st, refreshed, axstm_value_refresh(h));
        rc = refreshed == AXSTM_OK ? 0 : pyaxstm_raise_int(refreshed);
    }
    axstm_value_free(h);
    if (rc < 0)
        PyErr_WriteUnraisable((PyObject *)self);
    PyErr_Restore(type, value, tb);
}

static void TVar_dealloc(TVarObject *self)
{
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->anonymous && self->store != NULL && self->name != NULL)
        delete_key(self);
    Py_CLEAR(self->store);
    Py_CLEAR(self->name);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The running transaction, if it runs on this TVar's store. */
static struct txn_ctx *txn_for(TVarObject *self)
{
    struct txn_ctx *ctx = current;
    if (ctx == NULL || ctx->tx == NULL) {
        PyErr_SetString(PyAxstm_NoTransaction,
                        "a TVar is read and written only inside atomically()");
        return NULL;
    }
    if (ctx->store != self->store) {
        PyErr_SetString(PyExc_ValueError,
                        "the TVar belongs to another store than the running transaction's");
        return NULL;
    }
    return ctx;
}

/* A library code met inside a body: the snapshot is gone, so the body is
 * unwound and run again; anything else is an error of the body. */
static PyObject *txn_failed(struct txn_ctx *ctx, int rc)
{
    if (rc == AXSTM_CONCURRENT_UPDATE || rc == AXSTM_BUSY_RETRY) {
        if (ctx->abort_code == 0)
            ctx->abort_code = rc;
        PyErr_SetNone(PyAxstm_Abort);
        return NULL;
    }
    return pyaxstm_raise(rc);
}

static PyObject *TVar_get(TVarObject *self, PyObject *unused)
{
    (void)unused;
    struct txn_ctx *ctx = txn_for(self);
    if (ctx == NULL)
        return NULL;
    const void *data;
    size_t len;
    int rc;
    PYAXSTM_CALL(self->store, rc,
                 axstm_txn_get(ctx->tx, PyBytes_AS_STRING(self->name), &data, &len));
    if (rc == AXSTM_ENOVALUE)
        Py_RETURN_NONE;
    if (rc != AXSTM_OK)
        return txn_failed(ctx, rc);
    return pyaxstm_decode(data, len);
}

static PyObject *TVar_set(TVarObject *self, PyObject *value)
{
    struct txn_ctx *ctx = txn_for(self);
    if (ctx == NULL)
        return NULL;
    pyaxstm_buf b;
    if (pyaxstm_encode(value, self->store->remote, &b) < 0) {
        pyaxstm_buf_release(&b);
        return NULL;
    }
    if (b.ref >= 0) {
        PyObject *id = PyLong_FromLongLong(b.ref);
        if (ctx->pins == NULL)
            ctx->pins = PyList_New(0);
        if (id == NULL || ctx->pins == NULL || PyList_Append(ctx->pins, id) < 0 ||
            pyaxstm_ref_pin(b.ref) < 0) {
            Py_XDECREF(id);
            pyaxstm_buf_release(&b);
            return NULL;
        }
        Py_DECREF(id);
    }
    int rc;
    PYAXSTM_CALL(self->store, rc,
                 axstm_txn_set(ctx->tx, PyBytes_AS_STRING(self->name), b.data, (size_t)b.len));
    pyaxstm_buf_release(&b);
    if (rc != AXSTM_OK)
        return txn_failed(ctx, rc);
    Py_RETURN_NONE;
}

static PyObject *TVar_get_value(TVarObject *self, void *closure)
{
    (void)closure;
    return TVar_get(self, NULL);
}

static int TVar_set_value(TVarObject *self, PyObject *value, void *closure)
{
    (void)closure;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "a TVar's value cannot be deleted");
        return -1;
    }
    PyObject *r = TVar_set(self, value);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *TVar_get_key(TVarObject *self, void *closure)
{
    (void)closure;
    return PyObject_CallOneArg(pyaxstm_key_from_name, self->name);
}

static PyObject *TVar_get_name(TVarObject *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->name);
}

static PyObject *TVar_get_store(TVarObject *self, void *closure)
{
    (void)closure;
    return Py_NewRef((PyObject *)self->store);
}

static PyMethodDef TVar_methods[] = {
    {"get", (PyCFunction)TVar_get, METH_NOARGS,
     "get() -> the value, as the running transaction sees it."},
    {"set", (PyCFunction)TVar_set, METH_O, "set(value): writes the value in the transaction."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef TVar_getset[] = {
    {"value", (getter)TVar_get_value, (setter)TVar_set_value, "get() and set() as a property",
     NULL},
    {"key", (getter)TVar_get_key, NULL, "the key it lives under in its store", NULL},
    {"_name", (getter)TVar_get_name, NULL, "the key's name in the store, as bytes", NULL},
    {"store", (getter)TVar_get_store, NULL, "the Store it lives in", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject PyAxstm_TVarType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "axstm.TVar",
    .tp_basicsize = sizeof(TVarObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "TVar(value=None, store=None, key=None) -> a transactional variable.\n\n"
              "Read and written only inside atomically().  It lives under a key of store (the "
              "default store when None): one made up for it, deleted when the TVar is "
              "collected, or key, shared with whoever names it too (and kept).",
    .tp_new = TVar_new,
    .tp_dealloc = (destructor)TVar_dealloc,
    .tp_methods = TVar_methods,
    .tp_getset = TVar_getset,
    .tp_weaklistoffset = offsetof(TVarObject, weakreflist),
};

/* prefetch(*tvars): axstm_txn_prefetch of their names, in the running
 * transaction, all of whose store they must be. */
static PyObject *mod_prefetch(PyObject *self, PyObject *args)
{
    (void)self;
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    struct txn_ctx *ctx = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyTuple_GET_ITEM(args, i);
        if (!PyObject_TypeCheck(v, &PyAxstm_TVarType)) {
            PyErr_SetString(PyExc_TypeError, "prefetch() takes TVars");
            return NULL;
        }
        if ((ctx = txn_for((TVarObject *)v)) == NULL)
            return NULL;
    }
    if (n == 0) {
        if (current == NULL || current->tx == NULL) {
            PyErr_SetString(PyAxstm_NoTransaction, "prefetch() runs only inside atomically()");
            return NULL;
        }
        Py_RETURN_NONE;
    }
    const char **names = PyMem_Malloc((size_t)n * sizeof *names);
    if (names == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++)
        names[i] = PyBytes_AS_STRING(((TVarObject *)PyTuple_GET_ITEM(args, i))->name);
    int rc;
    PYAXSTM_CALL(ctx->store, rc, axstm_txn_prefetch(ctx->tx, names, (size_t)n));
    PyMem_Free(names);
    if (rc != AXSTM_OK)
        return txn_failed(ctx, rc);
    Py_RETURN_NONE;
}

static PyObject *mod_set_default_store(PyObject *self, PyObject *store)
{
    (void)self;
    if (!PyObject_TypeCheck(store, &PyAxstm_StoreType)) {
        PyErr_SetString(PyExc_TypeError, "the default store is an axstm.Store");
        return NULL;
    }
    Py_XSETREF(pyaxstm_default_store, (StoreObject *)Py_NewRef(store));
    Py_RETURN_NONE;
}

static PyMethodDef stm_methods[] = {
    {"_set_default_store", (PyCFunction)mod_set_default_store, METH_O,
     "Internal: the store of TVars and atomically when none is named."},
    {"atomically", (PyCFunction)(void (*)(void))mod_atomically, METH_VARARGS | METH_KEYWORDS,
     "atomically(fn, store=None) -> fn()'s result: runs fn as one transaction on store (the "
     "default store when None), again on conflicts and, after retry(), once a TVar it read has "
     "changed.  An exception from fn rolls its writes back and propagates.  Inside a "
     "transaction it nests: fn's writes are dropped if it raises."},
    {"retry", (PyCFunction)mod_retry, METH_NOARGS,
     "retry(): abandons this run of the transaction; atomically runs it again once a TVar it "
     "read has changed."},
    {"prefetch", (PyCFunction)mod_prefetch, METH_VARARGS,
     "prefetch(*tvars): inside atomically(), reads the TVars all at once, as get() would one "
     "by one (each counts as read); on a store kept in a server that is one round trip for all "
     "of them, and their get() calls after it cost none."},
    {"in_transaction", (PyCFunction)mod_in_transaction, METH_NOARGS,
     "in_transaction() -> whether this thread is inside atomically()."},
    {NULL, NULL, 0, NULL},
};

int pyaxstm_stm_init(PyObject *m)
{
    if (PyType_Ready(&PyAxstm_TVarType) < 0 ||
        PyModule_AddObjectRef(m, "TVar", (PyObject *)&PyAxstm_TVarType) < 0)
        return -1;
    if (PyModule_AddFunctions(m, stm_methods) < 0)
        return -1;
    /* axstm/__init__.py replaces it with an axstm.Store; this one serves
     * until then. */
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL)
        return -1;
    pyaxstm_default_store =
        (StoreObject *)PyObject_Call((PyObject *)&PyAxstm_StoreType, empty, NULL);
    Py_DECREF(empty);
    return pyaxstm_default_store != NULL ? 0 : -1;
}
