/* SPDX-License-Identifier: MIT */
/*
 * codec.c -- Python values as the bytes of a key, and Python keys as key
 * names.
 *
 * A value is stored as one tag byte and its payload:
 *   'N'  None                'T', 'F'  True, False
 *   'i'  an int that fits in 64 bits, 8 bytes little-endian
 *   'f'  a float, its 8 IEEE bytes little-endian
 *   's'  a str, UTF-8        'b'  bytes, as they are
 *   'r'  kept by reference: the process's token and an id (module.c)
 * and anything else as its pickle, whose first byte (PROTO, 0x80) is the
 * tag.  The six exact types take no Python call either way; subclasses (an
 * IntEnum, a str subclass) are pickled so that they come back as they
 * went.  Byte order is fixed so that processes on other machines sharing
 * a Redis store read the same numbers.  Bytes that match none of these
 * (a value written by a C program) decode as a bytes object.
 */
#include "pyaxstm.h"

#include <string.h>

/* Protocol 5 (Python 3.8 and later) for every pickle, so that processes
 * sharing a store agree whatever their default. */
#define PICKLE_PROTOCOL 5

void pyaxstm_buf_release(pyaxstm_buf *b)
{
    PyMem_Free(b->heap);
    b->heap = NULL;
    Py_CLEAR(b->keep);
}

/* Tag and payload into b: in its own array when they fit, else on the
 * heap. */
static int put(pyaxstm_buf *b, char tag, const void *payload, Py_ssize_t n)
{
    char *dst = b->buf;
    if ((size_t)n + 1 > sizeof b->buf) {
        b->heap = PyMem_Malloc((size_t)n + 1);
        if (b->heap == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        dst = b->heap;
    }
    dst[0] = tag;
    memcpy(dst + 1, payload, (size_t)n);
    b->data = dst;
    b->len = n + 1;
    return 0;
}

static void le64(unsigned char out[8], uint64_t x)
{
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(x >> (8 * i));
}

static uint64_t from_le64(const unsigned char in[8])
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x |= (uint64_t)in[i] << (8 * i);
    return x;
}

static int put_ref(PyObject *obj, pyaxstm_buf *b)
{
    int64_t id = pyaxstm_ref_put(obj);
    if (id < 0)
        return -1;
    unsigned char payload[PYAXSTM_TOKEN_LEN + 8];
    memcpy(payload, pyaxstm_ref_token, PYAXSTM_TOKEN_LEN);
    memcpy(payload + PYAXSTM_TOKEN_LEN, &id, 8); /* read back only by this process */
    b->ref = id;
    return put(b, 'r', payload, sizeof payload);
}

int pyaxstm_encode(PyObject *obj, int remote, pyaxstm_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->heap = NULL;
    b->keep = NULL;
    b->ref = -1;
    if (obj == Py_None)
        return put(b, 'N', NULL, 0);
    if (obj == Py_True)
        return put(b, 'T', NULL, 0);
    if (obj == Py_False)
        return put(b, 'F', NULL, 0);
    if (PyLong_CheckExact(obj)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (x == -1 && PyErr_Occurred())
            return -1;
        if (!overflow) {
            unsigned char payload[8];
            le64(payload, (uint64_t)x);
            return put(b, 'i', payload, 8);
        }
    } else if (PyFloat_CheckExact(obj)) {
        double d = PyFloat_AS_DOUBLE(obj);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        unsigned char payload[8];
        le64(payload, bits);
        return put(b, 'f', payload, 8);
    } else if (PyUnicode_CheckExact(obj)) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &n);
        if (utf8 != NULL && (size_t)n < AXSTM_VALUE_MAX)
            return put(b, 's', utf8, n);
        /* Lone surrogates have no UTF-8: pickle keeps them. */
        PyErr_Clear();
    } else if (PyBytes_CheckExact(obj)) {
        if ((size_t)PyBytes_GET_SIZE(obj) < AXSTM_VALUE_MAX)
            return put(b, 'b', PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj));
    }

    PyObject *pickled = PyObject_CallFunction(pyaxstm_pickle_dumps, "Oi", obj, PICKLE_PROTOCOL);
    if (pickled != NULL && (size_t)PyBytes_GET_SIZE(pickled) <= AXSTM_VALUE_MAX) {
        b->keep = pickled;
        b->data = PyBytes_AS_STRING(pickled);
        b->len = PyBytes_GET_SIZE(pickled);
        return 0;
    }
    if (pickled != NULL) {
        Py_DECREF(pickled);
        if (remote)
            return pyaxstm_raise_int(AXSTM_E2BIG);
    } else {
        /* Only pickle's refusals fall back; KeyboardInterrupt or
         * MemoryError go on up. */
        if (!PyErr_ExceptionMatches(PyExc_Exception) || PyErr_ExceptionMatches(PyExc_MemoryError))
            return -1;
        if (remote) {
            /* Say why on top of pickle's own message. */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            PyErr_Format(PyExc_TypeError,
                         "a store opened by address holds only values pickle can write "
                         "(%S); values kept by reference live in one process",
                         value);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            return -1;
        }
        PyErr_Clear();
    }
    return put_ref(obj, b);
}

PyObject *pyaxstm_decode(const void *data, size_t len)
{
    const unsigned char *p = data;
    if (p == NULL || len == 0)
        Py_RETURN_NONE;
    switch (p[0]) {
    case 'N':
        if (len == 1)
            Py_RETURN_NONE;
        break;
    case 'T':
        if (len == 1)
            Py_RETURN_TRUE;
        break;
    case 'F':
        if (len == 1)
            Py_RETURN_FALSE;
        break;
    case 'i':
        if (len == 9)
            return PyLong_FromLongLong((long long)from_le64(p + 1));
        break;
    case 'f':
        if (len == 9) {
            uint64_t bits = from_le64(p + 1);
            double d;
            memcpy(&d, &bits, 8);
            return PyFloat_FromDouble(d);
        }
        break;
    case 's': {
        PyObject *s = PyUnicode_DecodeUTF8((const char *)p + 1, (Py_ssize_t)len - 1, NULL);
        if (s != NULL)
            return s;
        PyErr_Clear();
        break;
    }
    case 'b':
        return PyBytes_FromStringAndSize((const char *)p + 1, (Py_ssize_t)len - 1);
    case 'r':
        if (len == 1 + PYAXSTM_TOKEN_LEN + 8) {
            if (memcmp(p + 1, pyaxstm_ref_token, PYAXSTM_TOKEN_LEN) != 0) {
                PyErr_SetString(PyAxstm_Error,
                                "the value is kept by reference in another process: only "
                                "that process can read it");
                return NULL;
            }
            int64_t id;
            memcpy(&id, p + 1 + PYAXSTM_TOKEN_LEN, 8);
            return pyaxstm_ref_get(id);
        }
        break;
    case 0x80: {
        PyObject *bytes = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
        if (bytes == NULL)
            return NULL;
        PyObject *obj = PyObject_CallOneArg(pyaxstm_pickle_loads, bytes);
        Py_DECREF(bytes);
        return obj;
    }
    default:
        break;
    }
    return PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
}

/* ------------------------------------------------------------------ */
/* Keys                                                               */
/* ------------------------------------------------------------------ */

int pyaxstm_key(PyObject *key, const char **name, PyObject **keep)
{
    *keep = NULL;
    /* The common case without a Python call: a str that is a valid key
     * names itself.  UTF-8 never holds a 0xff byte, which is how every
     * other key's name begins (axstm/_keys.py), so the two never meet. */
    if (PyUnicode_CheckExact(key)) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(key, &n);
        if (utf8 != NULL && n > 0 && n <= AXSTM_KEY_MAX && strlen(utf8) == (size_t)n) {
            *name = utf8;
            return 0;
        }
        PyErr_Clear();
    }
    PyObject *bytes = PyObject_CallOneArg(pyaxstm_key_name, key);
    if (bytes == NULL)
        return -1;
    if (!PyBytes_Check(bytes)) {
        Py_DECREF(bytes);
        PyErr_SetString(PyExc_SystemError, "axstm._keys.key_name must return bytes");
        return -1;
    }
    *name = PyBytes_AS_STRING(bytes);
    *keep = bytes;
    return 0;
}
