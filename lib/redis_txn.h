/* SPDX-License-Identifier: MIT */
/*
 * redis_txn.h -- transactions on a store kept in Redis (redis_txn.c): what
 * txn.c hands over when its store is remote, or when the transaction
 * handle it is given is not an in-process one.
 */
#ifndef AXSTM_REDIS_TXN_H
#define AXSTM_REDIS_TXN_H

#include <stddef.h>

#include "axstm.h"
#include "blob.h"
#include "pacing.h"
#include "thread.h"

#ifdef AXSTM_HAVE_HIREDIS

/* The remote transaction running on this thread, or NULL. */
extern AXSTM__TLS void *axstm__remote_running;

/* axstm_atomically and its kin on a remote store. */
int axstm__remote_run(axstm_store *s, axstm_fn fn, void *arg, const struct axstm__run_mode *mode);

/* The calls of a body, for tx the remote transaction running on this
 * thread (else AXSTM_EINVAL).  *val stays put until the attempt ends. */
int axstm__remote_get(axstm_txn *tx, const char *key, const struct axstm__val **val);
int axstm__remote_prefetch(axstm_txn *tx, const char *const keys[], size_t nkeys);
int axstm__remote_set(axstm_txn *tx, const char *key, const void *data, size_t len);
int axstm__remote_delete(axstm_txn *tx, const char *key);
int axstm__remote_or_else(axstm_txn *tx, axstm_fn first, axstm_fn second, void *arg);

#else

/* Built without hiredis: no store is remote, and no handle is a remote
 * transaction. */
#define axstm__remote_running ((void *)0)
#define AXSTM__NO_REMOTE_TXN_(tx) ((void)(tx), AXSTM_EINVAL)
#define axstm__remote_run(s, fn, arg, mode) \
    ((void)(fn), (void)(arg), (void)(mode), AXSTM__NO_REMOTE_TXN_(s))
#define axstm__remote_get(tx, key, val) ((void)(key), (void)(val), AXSTM__NO_REMOTE_TXN_(tx))
#define axstm__remote_prefetch(tx, keys, nkeys) \
    ((void)(keys), (void)(nkeys), AXSTM__NO_REMOTE_TXN_(tx))
#define axstm__remote_set(tx, key, data, len) \
    ((void)(key), (void)(data), (void)(len), AXSTM__NO_REMOTE_TXN_(tx))
#define axstm__remote_delete(tx, key) ((void)(key), AXSTM__NO_REMOTE_TXN_(tx))
#define axstm__remote_or_else(tx, first, second, arg) \
    ((void)(first), (void)(second), (void)(arg), AXSTM__NO_REMOTE_TXN_(tx))

#endif

#endif
