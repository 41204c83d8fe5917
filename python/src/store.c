/* SPDX-License-Identifier: MIT */
/*
 * store.c -- Axon's Store, Value and Collection on libaxstm.
 *
 * The original kept a dict of Values under one lock; here each Python
 * object wraps a checkout of the C library: a Value holds an axstm_value,
 * a Collection an axstm_collection that lends one axstm_value per key.
 * Axon's attributes stay plain, writable attributes (.version, .value,
 * .store, .key), because programs write them (the Philosophers set
 * X[fork].value directly).  So a commit trusts the attributes, not the
 * handle: it goes through the Value's own handle only while .version still
 * matches the handle's version, and otherwise checks the key out afresh
 * and commits there when the store's version is not past .version (the
 * original's rule).  Either way the value is encoded at commit, which
 * copies it as the original's deepcopy did; a checkout decodes a new copy.
 *
 * BUSY_RETRY never reaches a lone checkout or commit: it means a lock was
 * held for the few instructions of a commit, so the call simply waits that
 * out (pyaxstm_busy_wait) and tries again.  The Philosophers examples
 * commit without catching BusyRetry and rely on that.
 */
#include "pyaxstm.h"

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_T_OBJECT T_OBJECT
#define Py_T_INT T_INT
#define Py_READONLY READONLY
#endif

#include <stdbool.h>
#include <string.h>

/* Keys of a call: the names to give the library and what keeps them. */
enum { NAMES_ON_STACK = 16 };
typedef struct {
    const char *stack_names[NAMES_ON_STACK];
    PyObject *stack_keep[NAMES_ON_STACK];
    const char **names;
    PyObject **keep;
    Py_ssize_t n;
} keyset;

static void keyset_release(keyset *ks)
{
    for (Py_ssize_t i = 0; i < ks->n; i++)
        Py_XDECREF(ks->keep[i]);
    if (ks->names != ks->stack_names) {
        PyMem_Free(ks->names);
        PyMem_Free(ks->keep);
    }
}

static int keyset_fill(keyset *ks, PyObject *const *keys, Py_ssize_t n)
{
    ks->n = 0;
    ks->names = ks->stack_names;
    ks->keep = ks->stack_keep;
    if (n > NAMES_ON_STACK) {
        ks->names = PyMem_New(const char *, (size_t)n);
        ks->keep = PyMem_New(PyObject *, (size_t)n);
        if (ks->names == NULL || ks->keep == NULL) {
            PyMem_Free(ks->names);
            PyMem_Free(ks->keep);
            ks->names = ks->stack_names;
            ks->keep = ks->stack_keep;
            PyErr_NoMemory();
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (pyaxstm_key(keys[i], &ks->names[i], &ks->keep[i]) < 0) {
            keyset_release(ks);
            return -1;
        }
        ks->n = i + 1;
    }
    return 0;
}

int pyaxstm_store_saw_created(StoreObject *st, const char *name)
{
    PyObject *bytes = PyBytes_FromString(name);
    if (bytes == NULL)
        return -1;
    PyObject *got = PyDict_SetDefault(st->created, bytes, Py_None);
    Py_DECREF(bytes);
    return got == NULL ? -1 : 0;
}

/* Reads an Axon version attribute as the library's number. */
static int version_of(PyObject *version, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(version);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError) ||
            PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "a Value's version must be an int from 0 to 2**64-1, "
                         "not %R",
                         version);
        }
        return -1;
    }
    *out = v;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Value                                                              */
/* ------------------------------------------------------------------ */

/* The store a handle of a Value or Collection came from: kept apart from
 * the public .store attribute, which programs may change, because the
 * library's store must outlive every handle made from it. */
#define HSTORE(v) ((StoreObject *)(v)->hstore)

/* The Value type's layout with the hidden handle store; ValueObject in
 * pyaxstm.h is the public part. */
typedef struct {
    ValueObject v;
    PyObject *hstore;
} ValueImpl;

static ValueImpl *new_value(StoreObject *st, PyObject *key, axstm_value *h, PyObject *owner)
{
    ValueImpl *vi = PyObject_GC_New(ValueImpl, &PyAxstm_ValueType);
    if (vi == NULL)
        return NULL;
    ValueObject *v = &vi->v;
    v->version = NULL;
    v->value = NULL;
    v->store = Py_NewRef((PyObject *)st);
    v->key = Py_NewRef(key);
    v->h = NULL;
    v->owner = NULL;
    v->busy = 0;
    v->dict = NULL;
    vi->hstore = NULL;
    PyObject_GC_Track(vi);
    size_t len;
    const void *data = axstm_value_data(h, &len);
    uint64_t version = axstm_value_version(h);
    v->value = pyaxstm_decode(data, len);
    v->version = PyLong_FromUnsignedLongLong(version);
    if (v->value == NULL || v->version == NULL) {
        if (owner == NULL)
            axstm_value_free(h);
        Py_DECREF(vi);
        return NULL;
    }
    v->h = h;
    vi->hstore = Py_NewRef((PyObject *)st);
    if (owner != NULL)
        v->owner = Py_NewRef(owner);
    return vi;
}

static PyObject *Value_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    ValueObject *v = (ValueObject *)type->tp_alloc(type, 0);
    if (v == NULL)
        return NULL;
    v->version = PyLong_FromLong(0);
    v->value = Py_NewRef(Py_None);
    v->store = Py_NewRef(Py_None);
    v->key = Py_NewRef(Py_None);
    if (v->version == NULL) {
        Py_DECREF(v);
        return NULL;
    }
    return (PyObject *)v;
}

static int Value_init(ValueObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"version", "value", "store", "key", NULL};
    PyObject *version, *value, *store, *key;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO:Value", kwlist, &version, &value, &store,
                                     &key))
        return -1;
    Py_XSETREF(self->version, Py_NewRef(version));
    Py_XSETREF(self->value, Py_NewRef(value));
    Py_XSETREF(self->store, Py_NewRef(store));
    Py_XSETREF(self->key, Py_NewRef(key));
    return 0;
}

static int Value_traverse(ValueImpl *self, visitproc visit, void *arg)
{
    Py_VISIT(self->v.version);
    Py_VISIT(self->v.value);
    Py_VISIT(self->v.store);
    Py_VISIT(self->v.key);
    Py_VISIT(self->v.dict);
    Py_VISIT(self->v.owner);
    Py_VISIT(self->hstore);
    return 0;
}

/* Clears what programs can reach; the owner and the handle's store stay
 * until the Value is freed, since the handle needs them. */
static int Value_clear(ValueImpl *self)
{
    Py_CLEAR(self->v.version);
    Py_CLEAR(self->v.value);
    Py_CLEAR(self->v.store);
    Py_CLEAR(self->v.key);
    Py_CLEAR(self->v.dict);
    return 0;
}

static void Value_dealloc(ValueImpl *self)
{
    PyObject_GC_UnTrack(self);
    Value_clear(self);
    if (self->v.h != NULL && self->v.owner == NULL)
        axstm_value_free(self->v.h);
    self->v.h = NULL;
    Py_CLEAR(self->v.owner);
    Py_CLEAR(self->hstore);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Value_repr(ValueObject *self)
{
    PyObject *pair = PyTuple_Pack(2, self->version ? self->version : Py_None,
                                  self->value ? self->value : Py_None);
    if (pair == NULL)
        return NULL;
    PyObject *r = PyUnicode_FromFormat("Value%R", pair);
    Py_DECREF(pair);
    return r;
}

static PyObject *Value_set(ValueObject *self, PyObject *value)
{
    Py_XSETREF(self->value, Py_NewRef(value));
    Py_RETURN_NONE;
}

static PyObject *store_set_impl(StoreObject *self, PyObject *key, PyObject *value);

static PyObject *Value_commit(ValueObject *self, PyObject *unused)
{
    (void)unused;
    if (self->store == NULL || self->key == NULL) {
        PyErr_SetString(PyExc_AttributeError, "the Value has no store or key");
        return NULL;
    }
    /* As the original: self.store.set(self.key, self).  Held: Python code
     * run during the commit may set the attributes. */
    PyObject *store = Py_NewRef(self->store);
    PyObject *key = Py_NewRef(self->key);
    PyObject *r;
    if (PyObject_TypeCheck(store, &PyAxstm_StoreType))
        r = store_set_impl((StoreObject *)store, key, (PyObject *)self);
    else
        r = PyObject_CallMethod(store, "set", "OO", key, (PyObject *)self);
    Py_DECREF(store);
    Py_DECREF(key);
    return r;
}


static PyObject *Value_clone(ValueObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *copy = PyObject_CallOneArg(pyaxstm_deepcopy, self->value ? self->value : Py_None);
    if (copy == NULL)
        return NULL;
    PyObject *clone = PyObject_CallFunctionObjArgs(
        (PyObject *)&PyAxstm_ValueType, self->version ? self->version : Py_None, copy,
        self->store ? self->store : Py_None, self->key ? self->key : Py_None, NULL);
    Py_DECREF(copy);
    return clone;
}

static PyMethodDef Value_methods[] = {
    {"set", (PyCFunction)Value_set, METH_O, "set(value): sets the value without storing it."},
    {"commit", (PyCFunction)Value_commit, METH_NOARGS,
     "commit(): stores a new version of the value (store.set(key, self)); raises "
     "ConcurrentUpdate when the key was committed since this version."},
    {"clone", (PyCFunction)Value_clone, METH_NOARGS,
     "clone() -> a Value with the same version, store and key and a deep copy of the value."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Value_members[] = {
    {"version", Py_T_OBJECT_EX, offsetof(ValueObject, version), 0,
     "the version checked out, or last committed"},
    {"value", Py_T_OBJECT_EX, offsetof(ValueObject, value), 0, "the private copy of the value"},
    {"store", Py_T_OBJECT_EX, offsetof(ValueObject, store), 0, "the Store it belongs to"},
    {"key", Py_T_OBJECT_EX, offsetof(ValueObject, key), 0, "its key"},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject PyAxstm_ValueType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "axstm.Value",
    .tp_basicsize = sizeof(ValueImpl),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Value(version, value, store, key) -> a versioned value of a Store.\n\n"
              "Store.usevar and Store.using make them; .version, .value, .store and .key are "
              "plain attributes, as in Axon.",
    .tp_new = Value_new,
    .tp_init = (initproc)Value_init,
    .tp_dealloc = (destructor)Value_dealloc,
    .tp_traverse = (traverseproc)Value_traverse,
    .tp_clear = (inquiry)Value_clear,
    .tp_repr = (reprfunc)Value_repr,
    .tp_methods = Value_methods,
    .tp_members = Value_members,
    .tp_dictoffset = offsetof(ValueObject, dict),
};

/* ------------------------------------------------------------------ */
/* Collection                                                         */
/* ------------------------------------------------------------------ */

/*
 * One axstm_collection, shared by the Collection that checked it out and
 * the Values it lent: whichever goes last frees it.  Were the Values to
 * hold their Collection instead, every Collection would be in a cycle
 * (Collection -> Value -> Collection) and wait for the cyclic collector.
 */
typedef struct {
    PyObject_HEAD axstm_collection *c;
    PyObject *store; /* the library's store must outlive c */
} HolderObject;

static int Holder_traverse(HolderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->store);
    return 0;
}

static void Holder_dealloc(HolderObject *self)
{
    PyObject_GC_UnTrack(self);
    axstm_collection_free(self->c);
    Py_CLEAR(self->store);
    PyObject_GC_Del(self);
}

static PyTypeObject HolderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "axstm._axstm._CollectionHandle",
    .tp_basicsize = sizeof(HolderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Internal: an axstm_collection shared by a Collection and its Values.",
    .tp_dealloc = (destructor)Holder_dealloc,
    .tp_traverse = (traverseproc)Holder_traverse,
};

typedef struct {
    CollectionObject c;
} CollectionImpl;

static int Collection_traverse(CollectionImpl *self, visitproc visit, void *arg)
{
    Py_VISIT(self->c.store);
    Py_VISIT(self->c.slots);
    Py_VISIT(self->c.slotkeys);
    Py_VISIT(self->c.holder);
    return PyDict_Type.tp_traverse((PyObject *)self, visit, arg);
}

static int Collection_clear(CollectionImpl *self)
{
    Py_CLEAR(self->c.store);
    Py_CLEAR(self->c.slots);
    Py_CLEAR(self->c.slotkeys);
    return PyDict_Type.tp_clear((PyObject *)self);
}

static void Collection_dealloc(CollectionImpl *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->c.store);
    Py_CLEAR(self->c.slots);
    Py_CLEAR(self->c.slotkeys);
    self->c.c = NULL;
    Py_CLEAR(self->c.holder);
    PyDict_Type.tp_dealloc((PyObject *)self);
}

static PyObject *Collection_set_store(CollectionObject *self, PyObject *store)
{
    Py_XSETREF(self->store, Py_NewRef(store));
    Py_RETURN_NONE;
}

static PyObject *store_set_values_impl(StoreObject *self, PyObject *d);

static PyObject *Collection_commit(CollectionObject *self, PyObject *unused)
{
    (void)unused;
    if (self->store == NULL) {
        PyErr_SetString(PyExc_AttributeError, "the Collection has no store (set_store)");
        return NULL;
    }
    PyObject *store = Py_NewRef(self->store);
    PyObject *r;
    if (PyObject_TypeCheck(store, &PyAxstm_StoreType))
        r = store_set_values_impl((StoreObject *)store, (PyObject *)self);
    else
        r = PyObject_CallMethod(store, "set_values", "O", (PyObject *)self);
    Py_DECREF(store);
    return r;
}

static PyMethodDef Collection_methods[] = {
    {"set_store", (PyCFunction)Collection_set_store, METH_O,
     "set_store(store): the Store the collection commits to."},
    {"commit", (PyCFunction)Collection_commit, METH_NOARGS,
     "commit(): commits every Value of the collection, all or nothing "
     "(store.set_values(self))."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Collection_members[] = {
    {"store", Py_T_OBJECT_EX, offsetof(CollectionObject, store), 0, "the Store it commits to"},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject PyAxstm_CollectionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "axstm.Collection",
    .tp_basicsize = sizeof(CollectionImpl),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Collection() -> a dict of key -> Value that commits all or nothing.\n\n"
              "Store.using makes them, as in Axon.",
    .tp_dealloc = (destructor)Collection_dealloc,
    .tp_traverse = (traverseproc)Collection_traverse,
    .tp_clear = (inquiry)Collection_clear,
    .tp_methods = Collection_methods,
    .tp_members = Collection_members,
};

/* ------------------------------------------------------------------ */
/* Store                                                              */
/* ------------------------------------------------------------------ */

StoreObject *pyaxstm_default_store;

static int is_memory_address(const char *address)
{
    return strncasecmp(address, "mem:", 4) == 0;
}

static PyObject *Store_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"address", NULL};
    PyObject *address = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:Store", kwlist, &address))
        return NULL;
    const char *uri = NULL;
    if (address != Py_None) {
        uri = PyUnicode_Check(address) ? PyUnicode_AsUTF8(address) : NULL;
        if (uri == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "a store's address is a str, not %R", address);
            return NULL;
        }
    }
    StoreObject *self = (StoreObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->created = PyDict_New();
    self->address = Py_NewRef(address);
    if (self->created == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    int rc;
    if (uri == NULL) {
        self->s = axstm_store_new();
        rc = self->s != NULL ? AXSTM_OK : AXSTM_ENOMEM;
    } else {
        self->remote = !is_memory_address(uri);
        axstm_store *s = NULL;
        PyThreadState *ts = PyEval_SaveThread();
        rc = axstm_store_open(uri, &s);
        PyEval_RestoreThread(ts);
        self->s = s;
    }
    if (rc != AXSTM_OK) {
        Py_DECREF(self);
        return pyaxstm_raise(rc);
    }
    if (!self->remote && pyaxstm_ref_track_store((PyObject *)self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int Store_traverse(StoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    return 0;
}

static int Store_clear(StoreObject *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

static void Store_dealloc(StoreObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    Store_clear(self);
    Py_CLEAR(self->created);
    Py_CLEAR(self->address);
    /* Every Value, Collection and TVar made from it holds it: no handle is
     * left. */
    axstm_store_free(self->s);
    self->s = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

int pyaxstm_checkout(StoreObject *self, const char *name, axstm_value **h)
{
    pyaxstm_backoff b = {0, 0};
    for (;;) {
        int rc;
        PYAXSTM_CALL(self, rc, axstm_usevar(self->s, name, h));
        if (rc == AXSTM_OK)
            return 0;
        if (rc != AXSTM_BUSY_RETRY)
            return pyaxstm_raise_int(rc);
        if (pyaxstm_busy_wait(&b) < 0)
            return -1;
    }
}

static PyObject *Store_usevar(StoreObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    /* usevar(key, islocked=False): islocked is the original's way to say
     * "I hold .lock"; no lock is taken here, so it changes nothing. */
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw < 1 || nargs + nkw > 2 || nargs < 1 ||
        (nkw == 1 && !PyUnicode_Check(PyTuple_GET_ITEM(kwnames, 0))) ||
        (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "islocked"))) {
        PyErr_SetString(PyExc_TypeError, "usevar(key, islocked=False)");
        return NULL;
    }
    PyObject *key = args[0];
    const char *name;
    PyObject *keep;
    if (pyaxstm_key(key, &name, &keep) < 0)
        return NULL;
    axstm_value *h;
    if (pyaxstm_checkout(self, name, &h) < 0) {
        Py_XDECREF(keep);
        return NULL;
    }
    if (axstm_value_version(h) == 0 && axstm_value_data(h, NULL) == NULL &&
        pyaxstm_store_saw_created(self, name) < 0) {
        axstm_value_free(h);
        Py_XDECREF(keep);
        return NULL;
    }
    Py_XDECREF(keep);
    return (PyObject *)new_value(self, key, h, NULL);
}

int pyaxstm_set_encoded(StoreObject *self, axstm_value *h, PyObject *obj)
{
    if (obj == NULL) {
        PyErr_SetString(PyExc_AttributeError, "a Value has no value");
        return -1;
    }
    pyaxstm_buf b;
    int rc = pyaxstm_encode(obj, self->remote, &b);
    if (rc == 0) {
        rc = axstm_value_set(h, b.data, (size_t)b.len);
        if (rc != AXSTM_OK)
            rc = pyaxstm_raise_int(rc);
    }
    pyaxstm_buf_release(&b);
    return rc;
}

/* A commit of a value (collection false) or a collection, BUSY_RETRY
 * waited out: 0, or -1 with the exception set. */
static int commit_handle(StoreObject *self, void *handle, bool collection)
{
    pyaxstm_backoff b = {0, 0};
    for (;;) {
        int rc;
        PYAXSTM_CALL(self, rc,
                     collection ? axstm_collection_commit(handle) : axstm_value_commit(handle));
        if (rc == AXSTM_OK)
            return 0;
        if (rc != AXSTM_BUSY_RETRY)
            return pyaxstm_raise_int(rc);
        if (pyaxstm_busy_wait(&b) < 0)
            return -1;
    }
}

int pyaxstm_commit(StoreObject *self, axstm_value *h)
{
    return commit_handle(self, h, false);
}

static int commit_collection(StoreObject *self, axstm_collection *c)
{
    return commit_handle(self, c, true);
}

static int set_version(ValueObject *v, uint64_t version)
{
    PyObject *num = PyLong_FromUnsignedLongLong(version);
    if (num == NULL)
        return -1;
    Py_XSETREF(v->version, num);
    return 0;
}

static int claim(_Atomic int *busy)
{
    if (atomic_exchange(busy, 1)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a Value or Collection is being committed by another thread");
        return -1;
    }
    return 0;
}

static PyObject *store_set_impl(StoreObject *self, PyObject *key, PyObject *value)
{
    if (!PyObject_TypeCheck(value, &PyAxstm_ValueType)) {
        PyErr_Format(PyExc_TypeError, "Store.set(key, value) takes a Value, not %R", value);
        return NULL;
    }
    ValueImpl *vi = (ValueImpl *)value;
    ValueObject *v = &vi->v;
    if (v->version == NULL || v->value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "the Value has no version or value");
        return NULL;
    }
    uint64_t version = 0;
    if (version_of(v->version, &version) < 0)
        return NULL;
    const char *name;
    PyObject *keep;
    if (pyaxstm_key(key, &name, &keep) < 0)
        return NULL;
    if (claim(&v->busy) < 0) {
        Py_XDECREF(keep);
        return NULL;
    }
    /* name may point into key, and key may be v.key, which Python code
     * run meanwhile (pickling) could replace. */
    Py_INCREF(key);
    Py_INCREF(v);
    int rc = -1;
    /* The fast way: through the Value's own checkout, while its version
     * is the one the program sees. */
    if (v->h != NULL && v->owner == NULL && HSTORE(vi) == self &&
        axstm_value_version(v->h) == version && strcmp(axstm_value_key(v->h), name) == 0) {
        if (pyaxstm_set_encoded(self, v->h, v->value) == 0 && pyaxstm_commit(self, v->h) == 0)
            rc = set_version(v, axstm_value_version(v->h));
        goto out;
    }
    /* Otherwise the original's rule on a fresh checkout: refused when the
     * store's version is past the Value's. */
    axstm_value *h;
    if (pyaxstm_checkout(self, name, &h) < 0)
        goto out;
    if (axstm_value_version(h) > version) {
        pyaxstm_raise(AXSTM_CONCURRENT_UPDATE);
    } else if (pyaxstm_set_encoded(self, h, v->value) == 0 && pyaxstm_commit(self, h) == 0) {
        rc = set_version(v, axstm_value_version(h));
        if (rc == 0 && v->h == NULL) {
            /* A clone, or a Value made by hand: keep the checkout for its
             * next commit. */
            v->h = h;
            Py_XSETREF(vi->hstore, Py_NewRef((PyObject *)self));
            h = NULL;
        }
    }
    axstm_value_free(h);
out:
    atomic_store(&v->busy, 0);
    Py_DECREF(v);
    Py_XDECREF(keep);
    Py_DECREF(key);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Store_set(StoreObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set(key, value) takes a key and a Value");
        return NULL;
    }
    return store_set_impl(self, args[0], args[1]);
}

static PyObject *Store_using(StoreObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    keyset ks;
    if (keyset_fill(&ks, args, nargs) < 0)
        return NULL;
    axstm_collection *c = NULL;
    pyaxstm_backoff b = {0, 0};
    for (;;) {
        int rc;
        PYAXSTM_CALL(self, rc, axstm_using(self->s, ks.names, (size_t)ks.n, &c));
        if (rc == AXSTM_OK)
            break;
        if ((rc != AXSTM_BUSY_RETRY && pyaxstm_raise_int(rc) < 0) || pyaxstm_busy_wait(&b) < 0) {
            keyset_release(&ks);
            return NULL;
        }
    }
    HolderObject *holder = PyObject_GC_New(HolderObject, &HolderType);
    if (holder == NULL) {
        axstm_collection_free(c);
        keyset_release(&ks);
        return NULL;
    }
    holder->c = c;
    holder->store = Py_NewRef((PyObject *)self);
    PyObject_GC_Track(holder);
    PyObject *empty = PyTuple_New(0);
    CollectionImpl *coll =
        empty != NULL ? (CollectionImpl *)PyDict_Type.tp_new(&PyAxstm_CollectionType, empty, NULL)
                      : NULL;
    Py_XDECREF(empty);
    if (coll == NULL) {
        Py_DECREF(holder);
        keyset_release(&ks);
        return NULL;
    }
    coll->c.c = c;
    coll->c.holder = (PyObject *)holder;
    coll->c.store = Py_NewRef((PyObject *)self);
    coll->c.slots = PyList_New(0);
    coll->c.slotkeys = PyList_New(0);
    if (coll->c.slots == NULL || coll->c.slotkeys == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        int there = PyDict_Contains((PyObject *)coll, args[i]);
        if (there < 0)
            goto fail;
        if (there)
            continue; /* a key given twice is one key, as in the dict */
        axstm_value *h = axstm_collection_value(c, ks.names[i]);
        if (axstm_value_version(h) == 0 && axstm_value_data(h, NULL) == NULL &&
            pyaxstm_store_saw_created(self, ks.names[i]) < 0)
            goto fail;
        ValueImpl *v = new_value(self, args[i], h, coll->c.holder);
        if (v == NULL)
            goto fail;
        int rc = PyDict_SetItem((PyObject *)coll, args[i], (PyObject *)v);
        if (rc == 0)
            rc = PyList_Append(coll->c.slots, (PyObject *)v);
        if (rc == 0)
            rc = PyList_Append(coll->c.slotkeys, args[i]);
        Py_DECREF(v);
        if (rc < 0)
            goto fail;
    }
    keyset_release(&ks);
    return (PyObject *)coll;
fail:
    keyset_release(&ks);
    Py_DECREF(coll);
    return NULL;
}

/* Whether d still holds exactly the Values its checkout lent, each at the
 * version it was lent at (or last committed). */
static int collection_intact(StoreObject *self, CollectionImpl *coll)
{
    CollectionObject *c = &coll->c;
    if (c->c == NULL || (StoreObject *)((HolderObject *)c->holder)->store != self ||
        c->slots == NULL || PyDict_GET_SIZE((PyObject *)coll) != PyList_GET_SIZE(c->slots))
        return 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(c->slots); i++) {
        ValueObject *v = (ValueObject *)PyList_GET_ITEM(c->slots, i);
        PyObject *now = PyDict_GetItemWithError((PyObject *)coll, PyList_GET_ITEM(c->slotkeys, i));
        if (now == NULL) {
            if (PyErr_Occurred())
                return -1;
            return 0;
        }
        if (now != (PyObject *)v || v->owner != c->holder || v->h == NULL || v->version == NULL)
            return 0;
        uint64_t version = 0;
        if (version_of(v->version, &version) < 0)
            return -1;
        if (version != axstm_value_version(v->h))
            return 0;
    }
    return 1;
}

static PyObject *commit_intact(StoreObject *self, CollectionObject *c)
{
    Py_ssize_t n = PyList_GET_SIZE(c->slots);
    for (Py_ssize_t i = 0; i < n; i++) {
        ValueObject *v = (ValueObject *)PyList_GET_ITEM(c->slots, i);
        if (pyaxstm_set_encoded(self, v->h, v->value) < 0)
            return NULL;
    }
    if (commit_collection(self, c->c) < 0)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        ValueObject *v = (ValueObject *)PyList_GET_ITEM(c->slots, i);
        if (set_version(v, axstm_value_version(v->h)) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* Any mapping of key -> Value: the original's rule on a fresh checkout of
 * all its keys, committed all or nothing. */
static PyObject *commit_mapping(StoreObject *self, PyObject *d)
{
    PyObject *items = PyMapping_Items(d);
    if (items == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    PyObject *result = NULL;
    PyObject **keys = PyMem_New(PyObject *, (size_t)(n > 0 ? n : 1));
    uint64_t *versions = PyMem_New(uint64_t, (size_t)(n > 0 ? n : 1));
    keyset ks = {.n = 0, .names = NULL};
    axstm_collection *c = NULL;
    if (keys == NULL || versions == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(items, i);
        keys[i] = PyTuple_GET_ITEM(pair, 0);
        PyObject *v = PyTuple_GET_ITEM(pair, 1);
        if (!PyObject_TypeCheck(v, &PyAxstm_ValueType)) {
            PyErr_Format(PyExc_TypeError, "set_values takes a mapping of key -> Value, not %R", v);
            goto out;
        }
        if (((ValueObject *)v)->value == NULL || ((ValueObject *)v)->version == NULL) {
            PyErr_SetString(PyExc_AttributeError, "a Value has no version or value");
            goto out;
        }
        if (version_of(((ValueObject *)v)->version, &versions[i]) < 0)
            goto out;
    }
    if (keyset_fill(&ks, keys, n) < 0) {
        ks.names = NULL;
        goto out;
    }
    pyaxstm_backoff b = {0, 0};
    for (;;) {
        int rc;
        PYAXSTM_CALL(self, rc, axstm_using(self->s, ks.names, (size_t)ks.n, &c));
        if (rc == AXSTM_OK)
            break;
        if ((rc != AXSTM_BUSY_RETRY && pyaxstm_raise_int(rc) < 0) || pyaxstm_busy_wait(&b) < 0)
            goto out;
    }
    int stale = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        axstm_value *h = axstm_collection_value(c, ks.names[i]);
        if (axstm_value_version(h) > versions[i])
            stale = 1;
    }
    if (stale) {
        pyaxstm_raise(AXSTM_CONCURRENT_UPDATE);
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        ValueObject *v = (ValueObject *)PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 1);
        if (pyaxstm_set_encoded(self, axstm_collection_value(c, ks.names[i]), v->value) < 0)
            goto out;
    }
    if (commit_collection(self, c) < 0)
        goto out;
    for (Py_ssize_t i = 0; i < n; i++) {
        ValueObject *v = (ValueObject *)PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 1);
        if (set_version(v, axstm_value_version(axstm_collection_value(c, ks.names[i]))) < 0)
            goto out;
    }
    result = Py_NewRef(Py_None);
out:
    axstm_collection_free(c);
    if (ks.names != NULL)
        keyset_release(&ks);
    PyMem_Free(keys);
    PyMem_Free(versions);
    Py_DECREF(items);
    return result;
}

static PyObject *store_set_values_impl(StoreObject *self, PyObject *d)
{
    if (PyObject_TypeCheck(d, &PyAxstm_CollectionType)) {
        CollectionImpl *coll = (CollectionImpl *)d;
        if (claim(&coll->c.busy) < 0)
            return NULL;
        Py_INCREF(d);
        PyObject *r;
        int intact = collection_intact(self, coll);
        if (intact < 0)
            r = NULL;
        else if (intact)
            r = commit_intact(self, &coll->c);
        else
            r = commit_mapping(self, d);
        atomic_store(&coll->c.busy, 0);
        Py_DECREF(d);
        return r;
    }
    return commit_mapping(self, d);
}

static PyObject *Store_set_values(StoreObject *self, PyObject *d)
{
    return store_set_values_impl(self, d);
}

static PyObject *Store_delete(StoreObject *self, PyObject *key)
{
    const char *name;
    PyObject *keep;
    if (pyaxstm_key(key, &name, &keep) < 0)
        return NULL;
    axstm_value *h = NULL;
    int rc = pyaxstm_checkout(self, name, &h);
    while (rc == 0) {
        axstm_value_delete(h);
        rc = pyaxstm_commit(self, h);
        if (rc == 0 || !PyErr_ExceptionMatches(PyAxstm_ConcurrentUpdate))
            break;
        /* Committed meanwhile: delete what is there now. */
        PyErr_Clear();
        axstm_value_free(h);
        h = NULL;
        rc = pyaxstm_checkout(self, name, &h);
    }
    axstm_value_free(h);
    Py_XDECREF(keep);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

struct visit_items {
    PyObject *list;
};

static int visit_item(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    struct visit_items *vi = arg;
    PyObject *value = pyaxstm_decode(data, len);
    if (value == NULL)
        return -1;
    PyObject *item = Py_BuildValue("(yKN)", key, (unsigned long long)version, value);
    if (item == NULL)
        return -1;
    int rc = PyList_Append(vi->list, item);
    Py_DECREF(item);
    return rc < 0 ? -1 : 0;
}

static PyObject *Store_raw_items(StoreObject *self, PyObject *unused)
{
    (void)unused;
    struct visit_items vi = {PyList_New(0)};
    if (vi.list == NULL)
        return NULL;
    /* The visitor decodes (a Python call): the GIL stays held. */
    int rc = axstm_store_foreach(self->s, visit_item, &vi);
    if (rc != AXSTM_OK) {
        Py_DECREF(vi.list);
        if (PyErr_Occurred())
            return NULL;
        return pyaxstm_raise(rc);
    }
    return vi.list;
}

static PyObject *Store_stats(StoreObject *self, PyObject *unused)
{
    (void)unused;
    axstm_stats st;
    int rc;
    PYAXSTM_CALL(self, rc, axstm_store_stats(self->s, &st));
    if (rc != AXSTM_OK)
        return pyaxstm_raise(rc);
    return Py_BuildValue("{sKsKsKsKsKsK}", "keys", (unsigned long long)st.keys, "commits",
                         (unsigned long long)st.commits, "conflicts",
                         (unsigned long long)st.conflicts, "busy", (unsigned long long)st.busy,
                         "retries_waited", (unsigned long long)st.retries_waited, "bytes",
                         (unsigned long long)st.bytes);
}

static PyObject *Store_get_created(StoreObject *self, void *closure)
{
    (void)closure;
    return PyDict_Keys(self->created);
}

static PyObject *Store_get_remote(StoreObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->remote);
}

static PyObject *Store_get_address(StoreObject *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->address);
}

static PyMethodDef Store_methods[] = {
    {"usevar", (PyCFunction)(void (*)(void))Store_usevar, METH_FASTCALL | METH_KEYWORDS,
     "usevar(key, islocked=False) -> Value: checks out a private copy of key's value (a new key "
     "starts at version 0 with the value None)."},
    {"using", (PyCFunction)(void (*)(void))Store_using, METH_FASTCALL,
     "using(*keys) -> Collection: checks out several keys as one consistent snapshot."},
    {"set", (PyCFunction)(void (*)(void))Store_set, METH_FASTCALL,
     "set(key, value): commits the Value value to key; raises ConcurrentUpdate when the key's "
     "version in the store is past value.version."},
    {"set_values", (PyCFunction)Store_set_values, METH_O,
     "set_values(collection): commits a mapping of key -> Value all or nothing."},
    {"delete", (PyCFunction)Store_delete, METH_O,
     "delete(key): removes key from the store (a commit: checkouts made before it conflict)."},
    {"stats", (PyCFunction)Store_stats, METH_NOARGS, "stats() -> dict of the store's counters."},
    {"_raw_items", (PyCFunction)Store_raw_items, METH_NOARGS,
     "_raw_items() -> [(name, version, value)] for every key, names as bytes."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Store_getset[] = {
    {"_created", (getter)Store_get_created, NULL, "names of the keys seen created, in order", NULL},
    {"remote", (getter)Store_get_remote, NULL, "whether the store lives in a server", NULL},
    {"address", (getter)Store_get_address, NULL, "the address it was opened at, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject PyAxstm_StoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "axstm._axstm.Store",
    .tp_basicsize = sizeof(StoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Store(address=None): libaxstm's store (see axstm.Store).",
    .tp_new = Store_new,
    .tp_dealloc = (destructor)Store_dealloc,
    .tp_traverse = (traverseproc)Store_traverse,
    .tp_clear = (inquiry)Store_clear,
    .tp_methods = Store_methods,
    .tp_getset = Store_getset,
    .tp_weaklistoffset = offsetof(StoreObject, weakreflist),
    .tp_dictoffset = offsetof(StoreObject, dict),
};

int pyaxstm_store_init(PyObject *m)
{
    PyAxstm_CollectionType.tp_base = &PyDict_Type;
    if (PyType_Ready(&HolderType) < 0 || PyType_Ready(&PyAxstm_StoreType) < 0 ||
        PyType_Ready(&PyAxstm_ValueType) < 0 || PyType_Ready(&PyAxstm_CollectionType) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "Store", (PyObject *)&PyAxstm_StoreType) < 0 ||
        PyModule_AddObjectRef(m, "Value", (PyObject *)&PyAxstm_ValueType) < 0 ||
        PyModule_AddObjectRef(m, "Collection", (PyObject *)&PyAxstm_CollectionType) < 0)
        return -1;
    return 0;
}
