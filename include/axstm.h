/* SPDX-License-Identifier: MIT */
/*
 * axstm.h -- software transactional memory as a store of named values.
 *
 * axstm brings Kamaelia's Axon.STM to C: a Store holds named, versioned
 * values.  You check values out (axstm_usevar, axstm_using), change your
 * private copies and commit them.  A commit fails with
 * AXSTM_CONCURRENT_UPDATE when someone else committed one of those keys
 * after you checked it out (redo your work), or with AXSTM_BUSY_RETRY when a
 * lock the call needs was held at that instant (simply call again).
 *
 * Thread safety
 * -------------
 * Every function taking an axstm_store may be called from any number of
 * threads at once; no thread needs to register.  A handle (axstm_value,
 * axstm_collection, axstm_watch) belongs to one thread at a time: pass it
 * between threads only with your own synchronisation.  An axstm_txn is valid
 * only inside the body it was passed to, on that body's thread.
 *
 * Each thread that calls the library gets, on its first call, a per-thread
 * slot of its own for its bookkeeping, given back when the thread exits;
 * up to 64 threads alive at once have one each, and further threads share
 * one more slot (correct, but their bookkeeping takes atomic instructions).
 * Each thread also keeps a few freed handle blocks for its next checkouts,
 * freed when it exits.
 *
 * Blocking
 * --------
 * No checkout or commit ever waits for another thread.  Where another
 * thread holds a lock such a call needs, it returns AXSTM_BUSY_RETRY at
 * once; it has changed nothing but, at most, created keys it was asked to
 * create (see axstm_usevar).  Locks are per key (held for the few
 * instructions of a commit) and per table shard (held while a key is
 * added or taken out); there is no store-wide lock on these paths:
 *   - checking out keys that exist is lock-free; it returns BUSY_RETRY only
 *     when one of the keys is being committed at that instant;
 *   - creating a key takes the lock of one of 64 table shards, so it returns
 *     BUSY_RETRY only when another thread is changing the same shard at
 *     that instant;
 *   - a commit takes the lock of each of its keys; commits of disjoint keys
 *     never touch a common lock.  Waking the waiters and watches of the
 *     keys it wrote takes no lock either (a semaphore post, or a write to a
 *     watch's eventfd per watch, once until the watch is re-armed), so a
 *     commit's cost depends only on the waiters of the keys it writes.
 * Watch calls and waits register on keys under a short lock (one of 64,
 * shared only with other registrations, held for a few instructions and
 * never across a system call):
 *   - axstm_watch_new and axstm_watch_free may wait that long for another
 *     thread registering or unregistering on a key of the same lock;
 *     axstm_watch_free also waits, if a commit is writing to the watch's
 *     descriptor at that instant, for that write to finish.
 * The functions that may block say so:
 *   - axstm_atomically blocks in AXSTM_RETRY until a key it read changes, and
 *     sleeps briefly in its backoff after conflicts.  A transaction that has
 *     lost 8 times in a row runs irrevocably: it takes a store mutex that only
 *     such transactions use and holds the locks of the keys it touches until
 *     its body ends, so other calls on those keys see BUSY_RETRY meanwhile.
 *     axstm_atomically_timed does all this only until its deadline, and
 *     never waits for that mutex (while another holds it, it runs as usual);
 *   - axstm_store_foreach may spin while a commit of the visited key is in
 *     flight.
 * axstm_try_atomically is the non-blocking way to run a transaction.
 * While another thread is in fork(), commits and key creations return
 * AXSTM_BUSY_RETRY (see fork, below).
 *
 * Threads that are cancelled or exit
 * ----------------------------------
 * A thread may be cancelled (pthread_cancel, with the default deferred
 * cancellation) or exit at any point where it is not inside a call of this
 * library, and the store stays fully usable.  Inside a call:
 *   - axstm_atomically and axstm_atomically_timed may be cancelled while
 *     they sleep (waiting in AXSTM_RETRY, or in backoff): the wait is undone
 *     and nothing else is held;
 *   - nowhere else does a call act on a cancellation request: the system
 *     calls that are cancellation points (drawing a new store's hash key,
 *     reading, writing and closing watch descriptors, waking watchers at
 *     commit) run with cancellation disabled, and the caller's state is
 *     restored after them, so a pending request acts at the caller's next
 *     cancellation point;
 *   - a transaction body or a foreach visitor must not exit or be cancelled
 *     (nor longjmp out): the call holds a read pin, and an irrevocable body
 *     holds key locks, which would then never be released.
 * Asynchronous cancellation must not be enabled across a call.
 *
 * fork
 * ----
 * In the child of a multithreaded parent only the thread that called
 * fork() goes on, and whatever the parent's other threads held inside a
 * store at that instant (key and table locks, wait mutexes, read pins)
 * stays held there.  So with a store made before the fork such a child may
 * only free the handles it holds of it (axstm_value_free,
 * axstm_collection_free, not axstm_watch_free: that takes a lock of the
 * store) and then the store: axstm_store_free frees all the store held and
 * waits for nothing.  What the parent's other threads held themselves
 * (their handles, their transactions' copies) stays allocated.  A store
 * that had no watch, and that no other thread was inside a call on, at
 * the fork (a single-threaded parent's, say) stays fully usable in the
 * child.  New stores made in the child work fully, from any threads it
 * starts.
 * For this the library registers fork handlers (pthread_atfork) with its
 * first axstm_store_new: fork() waits for the commits and key creations
 * under way to finish, so that no store is copied halfway through one.
 * The child calls malloc and free (axstm_store_free does), which POSIX
 * allows only after exec but glibc's allocator, and allocators with fork
 * handlers of their own, allow at once; the sanitizers' runtimes may not.
 *
 * Errors
 * ------
 * Every function that can fail returns AXSTM_OK (0) or a negative code.
 * A failed call has no effect, and out-parameters are written only on
 * AXSTM_OK.  The library never aborts, prints or exits.
 */
#ifndef AXSTM_H
#define AXSTM_H

#include <stddef.h>
#include <stdint.h>

#include "axstm_version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(AXSTM_BUILDING) && defined(__GNUC__)
#define AXSTM_API __attribute__((visibility("default")))
#else
#define AXSTM_API
#endif

/* ------------------------------------------------------------------ */
/* Codes                                                              */
/* ------------------------------------------------------------------ */

/*
 * The one list of codes: XX(NAME, value, message).  It makes both the enum
 * below and axstm_strerror().  Library codes are negative; positive codes
 * are free for the caller's own use (e.g. as rollback reasons).
 */
#define AXSTM_CODE_MAP(XX)                                                     \
    XX(OK, 0, "success")                                                       \
    XX(CONCURRENT_UPDATE, -1,                                                  \
       "a key was committed by someone else since it was checked out")         \
    XX(BUSY_RETRY, -2, "a lock was busy; nothing changed, call again")         \
    XX(RETRY, -3, "wait until something read has changed")                     \
    XX(ETIMEDOUT, -4, "timed out")                                             \
    XX(EINVAL, -5, "invalid argument")                                         \
    XX(E2BIG, -6, "key or value too long")                                     \
    XX(ENOMEM, -7, "out of memory")                                            \
    XX(ENOVALUE, -8, "the key has no value")                                   \
    XX(ETYPE, -9, "the value has the wrong size for this type")

enum axstm_code {
#define AXSTM_CODE_ENUM_(name, value, msg) AXSTM_##name = (value),
    AXSTM_CODE_MAP(AXSTM_CODE_ENUM_)
#undef AXSTM_CODE_ENUM_
};

/*
 * A short English phrase for a code.  Never NULL: unknown negative codes give
 * "unknown error", positive codes "caller-defined code".  Thread-safe.
 */
AXSTM_API const char *axstm_strerror(int code);

/* ------------------------------------------------------------------ */
/* Version                                                            */
/* ------------------------------------------------------------------ */

/*
 * axstm_version.h, made by configure and installed next to this header,
 * gives the release these headers belong to:
 *   AXSTM_VERSION_MAJOR, AXSTM_VERSION_MINOR, AXSTM_VERSION_PATCH
 *                         its three numbers, each below 256;
 *   AXSTM_VERSION_HEX     (MAJOR << 16) | (MINOR << 8) | PATCH, so that a
 *                         later release compares greater (0.1.0: 0x000100);
 *   AXSTM_VERSION_STRING  "MAJOR.MINOR.PATCH", e.g. "0.1.0".
 * All but the string are integer constants, usable in #if.  They tell the
 * release a program was compiled against; the functions below tell the
 * release of the library it runs with, which may differ.
 */

/*
 * Reports the release of the library actually loaded.
 *
 * Returns:   its AXSTM_VERSION_HEX, e.g. 0x000100 for 0.1.0: compare it
 *            with the AXSTM_VERSION_HEX the program was compiled against.
 * Ownership: nothing changes hands.
 * Blocking:  never waits.
 * Threads:   any thread.
 */
AXSTM_API unsigned int axstm_version(void);

/*
 * Reports the release of the library actually loaded, as a string.
 *
 * Returns:   its AXSTM_VERSION_STRING, e.g. "0.1.0"; never NULL.
 * Ownership: the string is the library's, static: never free or change it.
 * Blocking:  never waits.
 * Threads:   any thread.
 */
AXSTM_API const char *axstm_version_string(void);

/* ------------------------------------------------------------------ */
/* Store                                                              */
/* ------------------------------------------------------------------ */

/* Longest key in bytes, not counting its NUL.  Keys are never empty. */
#define AXSTM_KEY_MAX 1024
/* Longest value in bytes (64 MiB). */
#define AXSTM_VALUE_MAX ((size_t)64 * 1024 * 1024)

typedef struct axstm_store axstm_store;

/*
 * Creates an empty store.  Its key hash is seeded at random, so keys chosen
 * by an attacker cannot pile up in one bucket.
 * Returns the store (owned by the caller; free it with axstm_store_free), or
 * NULL only when out of memory.
 */
AXSTM_API axstm_store *axstm_store_new(void);

/*
 * Frees a store and every value it holds.  Every handle made from it must
 * have been freed first, and no other thread may be using it.  NULL is a
 * no-op.
 */
AXSTM_API void axstm_store_free(axstm_store *s);

/* ------------------------------------------------------------------ */
/* Values (Axon usevar)                                               */
/* ------------------------------------------------------------------ */

/* A handle on one key.  Free it before its store: after axstm_store_free,
 * passing it to any function, axstm_value_free included, is undefined. */
typedef struct axstm_value axstm_value;

/*
 * Checks out one key: *out becomes a private snapshot of the key's committed
 * value and version.  A missing key is created, at version 0 with no value,
 * and stays in the store even if nothing is ever committed to it.
 *   s    the store;  key  a non-empty NUL-terminated string of at most
 *   AXSTM_KEY_MAX bytes;  out  receives the handle (owned by the caller;
 *   free it with axstm_value_free).
 * Returns AXSTM_OK, AXSTM_EINVAL (NULL argument or empty key), AXSTM_E2BIG
 * (key too long), AXSTM_BUSY_RETRY (the key is being committed, or its table
 * shard is being changed, at this instant), or AXSTM_ENOMEM.  On ENOMEM,
 * EINVAL and E2BIG no key is created.  A BUSY_RETRY may come after the key
 * was created (someone committed it at that instant); the key then stays,
 * exactly as the repeated call will find it.  Never blocks.
 */
AXSTM_API int axstm_usevar(axstm_store *s, const char *key, axstm_value **out);

/* The handle's key (its own copy), valid as long as the handle.  NULL for
 * a NULL handle. */
AXSTM_API const char *axstm_value_key(const axstm_value *v);

/* The committed version this handle is based on (0: never committed). */
AXSTM_API uint64_t axstm_value_version(const axstm_value *v);

/*
 * The handle's current bytes: what was checked out, or what was last set.
 * Returns NULL when the key has no value yet (and sets *len to 0).  An empty
 * value gives a non-NULL pointer with *len 0.  The bytes are borrowed: valid
 * until the next set or refresh of this handle, or until it is freed.
 * len may be NULL.
 */
AXSTM_API const void *axstm_value_data(const axstm_value *v, size_t *len);

/*
 * Replaces the handle's private copy with a copy of len bytes from data.
 * Nothing in the store changes until commit.  data may be NULL only when
 * len is 0.  Returns AXSTM_OK, AXSTM_EINVAL, AXSTM_E2BIG (len over
 * AXSTM_VALUE_MAX) or AXSTM_ENOMEM (the handle keeps its old bytes).
 */
AXSTM_API int axstm_value_set(axstm_value *v, const void *data, size_t len);

/*
 * Reads the value as an int64_t in host byte order.  Returns AXSTM_OK,
 * AXSTM_EINVAL, AXSTM_ENOVALUE (no value yet) or AXSTM_ETYPE (the value is
 * not exactly 8 bytes).
 */
AXSTM_API int axstm_value_get_i64(const axstm_value *v, int64_t *out);

/* Sets the private copy to the 8 bytes of x (host order).  As value_set. */
AXSTM_API int axstm_value_set_i64(axstm_value *v, int64_t x);

/*
 * Reads the value as a string: *out points into the handle's bytes (borrowed,
 * as for axstm_value_data).  Returns AXSTM_OK, AXSTM_EINVAL, AXSTM_ENOVALUE,
 * or AXSTM_ETYPE (the value does not end with its first NUL byte).
 */
AXSTM_API int axstm_value_get_str(const axstm_value *v, const char **out);

/* Sets the private copy to str including its NUL.  As value_set. */
AXSTM_API int axstm_value_set_str(axstm_value *v, const char *str);

/*
 * Publishes the handle.  Rejected with AXSTM_CONCURRENT_UPDATE if and only
 * if the key's committed version is greater than the handle's: then nothing
 * is written and the handle is unchanged (refresh it and redo the work).
 * On success the value (changed or not; "no value" included) is stored, the
 * key's version becomes the handle's version + 1, and the handle's version
 * is bumped in place, so it can be changed and committed again.
 * Returns AXSTM_OK, AXSTM_CONCURRENT_UPDATE, AXSTM_BUSY_RETRY (the key's lock
 * was held at this instant: call again, nothing changed), or AXSTM_EINVAL
 * (NULL, or a value borrowed from a collection).  Never blocks.
 */
AXSTM_API int axstm_value_commit(axstm_value *v);

/*
 * Drops the handle's local changes and re-reads the key's committed value and
 * version.  Returns AXSTM_OK, AXSTM_BUSY_RETRY or AXSTM_EINVAL (NULL, or a
 * value borrowed from a collection).  Never blocks.
 */
AXSTM_API int axstm_value_refresh(axstm_value *v);

/*
 * Marks the handle's key for deletion: like axstm_value_set, a change of
 * the private copy only (axstm_value_data then returns NULL).  The next
 * successful commit of the handle (or of its collection) removes the key
 * from the store, together with everything else that commit writes: a
 * commit of that key like any other (handles checked out before it get
 * AXSTM_CONCURRENT_UPDATE, watches on it fire, transactions waiting on it
 * wake), after which axstm_store_foreach no longer visits it and
 * axstm_stats.keys no longer counts it.  A later axstm_usevar of the name
 * creates the key afresh (version 0, no value), and no handle checked out
 * before the delete can ever commit over it, whatever the version
 * numbers; nor can the deleting handle itself (refresh it to go on using
 * the name).  Returns AXSTM_OK or AXSTM_EINVAL (NULL).  Never blocks.
 */
AXSTM_API int axstm_value_delete(axstm_value *v);

/* Frees a handle made by axstm_usevar.  NULL and borrowed values: no-op. */
AXSTM_API void axstm_value_free(axstm_value *v);

/* ------------------------------------------------------------------ */
/* Collections (Axon using)                                           */
/* ------------------------------------------------------------------ */

/* A handle on several keys, which lends out one axstm_value per key.  Free
 * it before its store: after axstm_store_free, passing it or a value it
 * lent to any function, axstm_collection_free included, is undefined. */
typedef struct axstm_collection axstm_collection;

/*
 * Checks out several keys as one consistent snapshot (as if read at a single
 * instant).  Missing keys are created as by axstm_usevar, all at once: on
 * ENOMEM, EINVAL or E2BIG none is created; a BUSY_RETRY that comes after the
 * creation (a key committed at that instant) leaves them created, as the
 * repeated call will find them.  Duplicate keys count once:
 * the collection holds the distinct keys in the order of their first
 * appearance.  nkeys == 0 gives an empty collection (keys may then be NULL).
 * Returns AXSTM_OK, AXSTM_EINVAL, AXSTM_E2BIG, AXSTM_BUSY_RETRY or
 * AXSTM_ENOMEM; *out is owned by the caller (axstm_collection_free).
 * Never blocks.
 */
AXSTM_API int axstm_using(axstm_store *s, const char *const keys[], size_t nkeys,
                          axstm_collection **out);

/* Number of distinct keys in the collection (0 for NULL). */
AXSTM_API size_t axstm_collection_size(const axstm_collection *c);

/*
 * The i-th value of the collection, borrowed: read and change it with the
 * axstm_value_* functions, commit it with the collection.  NULL when i is out
 * of range or c is NULL.
 */
AXSTM_API axstm_value *axstm_collection_at(axstm_collection *c, size_t i);

/* The collection's value for key, borrowed; NULL if key is not in it. */
AXSTM_API axstm_value *axstm_collection_value(axstm_collection *c,
                                              const char *key);

/*
 * Commits every value of the collection, all or nothing, atomically with
 * respect to every other checkout and commit.  Rejected with
 * AXSTM_CONCURRENT_UPDATE if and only if some key's committed version is
 * greater than the collection's version of it; then nothing is written and
 * the collection is unchanged.  On success every key is written (changed or
 * not) and every version is bumped in place.  An empty collection commits
 * successfully and does nothing.  Returns as axstm_value_commit.
 */
AXSTM_API int axstm_collection_commit(axstm_collection *c);

/*
 * Drops all local changes and takes a new consistent snapshot of the same
 * keys.  Returns AXSTM_OK, AXSTM_BUSY_RETRY or AXSTM_EINVAL; on failure the
 * collection is unchanged.
 */
AXSTM_API int axstm_collection_refresh(axstm_collection *c);

/* Frees a collection and its borrowed values.  NULL is a no-op. */
AXSTM_API void axstm_collection_free(axstm_collection *c);

/* ------------------------------------------------------------------ */
/* Transactions (the stm package's atomically, retry and or_else)      */
/* ------------------------------------------------------------------ */

/* A running transaction, handed to its body.  It lives only while the body
 * runs, and its store must outlive it: freeing the store meanwhile (from
 * the body or any other thread) is undefined. */
typedef struct axstm_txn axstm_txn;

/*
 * A transaction body.  It reads and writes keys only through tx and returns
 *   0              to commit what it wrote;
 *   AXSTM_RETRY    to wait until a key it read has been committed by someone
 *                  else, then run again;
 *   anything else  to roll back: nothing it wrote is published, and
 *                  axstm_atomically returns that code.  Positive codes are
 *                  the caller's own ("not enough money").
 * A code returned by an axstm_txn_* call (e.g. AXSTM_CONCURRENT_UPDATE when
 * a read finds the snapshot gone) should be passed straight back: the body
 * is then simply run again.  The body may run several times, so it must not
 * have effects outside tx that cannot be repeated.
 */
typedef int (*axstm_fn)(axstm_txn *tx, void *arg);

/*
 * Runs fn(tx, arg) as one atomic, serializable transaction on s.  Reads see
 * one consistent snapshot, also before commit (opacity): a running body
 * never sees a state that no serial order could produce.  On a conflict the
 * body is run again after a short randomised backoff; a body that keeps
 * losing is eventually run alone ("irrevocably": it locks each key as it
 * first touches it, so it cannot fail), so no transaction starves.
 * Returns AXSTM_OK once committed, the body's own non-zero code (rolled
 * back), AXSTM_EINVAL (NULL s or fn; called from inside a body; or the body
 * retried without having read any key, which would wait forever), or
 * AXSTM_ENOMEM.  May block: in AXSTM_RETRY, and briefly in backoff.
 */
AXSTM_API int axstm_atomically(axstm_store *s, axstm_fn fn, void *arg);

/*
 * As axstm_atomically, but gives up once timeout_ns nanoseconds have passed
 * since the call began: returns AXSTM_ETIMEDOUT (nothing published).  The
 * deadline holds however busy the keys are.  No wait in AXSTM_RETRY and no
 * backoff sleeps past it, and once it has passed, a run of the body that
 * does not commit (it returned AXSTM_RETRY, or lost a conflict) ends the
 * call, so at most one run begins after the deadline.  A timeout of 0 never
 * waits: the body runs once, and if it must wait or run again the call
 * returns AXSTM_ETIMEDOUT.  Negative: AXSTM_EINVAL.
 */
AXSTM_API int axstm_atomically_timed(axstm_store *s, axstm_fn fn, void *arg,
                                     int64_t timeout_ns);

/*
 * Reads key inside a transaction: the transaction's own latest write of it,
 * or its committed value.  *data and *len are written on AXSTM_OK only; the
 * bytes are borrowed and stay valid until this run of the body ends.  A key
 * that does not exist (or was deleted) reads as AXSTM_ENOVALUE and is not
 * created; AXSTM_RETRY can still wait on it, and wakes when a commit creates
 * it.  data may be NULL to test for a value only.
 * Returns AXSTM_OK, AXSTM_ENOVALUE (the key has no value), AXSTM_EINVAL,
 * AXSTM_E2BIG (key too long), AXSTM_CONCURRENT_UPDATE (the snapshot is gone:
 * return it), AXSTM_BUSY_RETRY (return it) or AXSTM_ENOMEM.
 */
AXSTM_API int axstm_txn_get(axstm_txn *tx, const char *key, const void **data, size_t *len);

/*
 * Writes a copy of len bytes from data to key inside a transaction; seen by
 * later reads of this transaction, published at commit.  data may be NULL
 * only when len is 0.  Returns AXSTM_OK, AXSTM_EINVAL, AXSTM_E2BIG,
 * AXSTM_BUSY_RETRY (return it) or AXSTM_ENOMEM.
 */
AXSTM_API int axstm_txn_set(axstm_txn *tx, const char *key, const void *data, size_t len);

/*
 * Deletes key inside a transaction: later reads of this transaction see no
 * value (AXSTM_ENOVALUE), and the commit removes the key (see
 * axstm_value_delete), all or nothing with the rest of the transaction.
 * A key that does not exist needs no delete: its absence is read instead
 * (no key is created, nothing is committed).  Returns AXSTM_OK,
 * AXSTM_EINVAL, AXSTM_E2BIG, AXSTM_CONCURRENT_UPDATE or AXSTM_BUSY_RETRY
 * (return them) or AXSTM_ENOMEM.
 */
AXSTM_API int axstm_txn_delete(axstm_txn *tx, const char *key);

/* axstm_txn_get of an 8-byte value (AXSTM_ETYPE for another size). */
AXSTM_API int axstm_txn_get_i64(axstm_txn *tx, const char *key, int64_t *out);

/* axstm_txn_set of the 8 bytes of x (host order). */
AXSTM_API int axstm_txn_set_i64(axstm_txn *tx, const char *key, int64_t x);

/*
 * Runs first(tx, arg); if it returns AXSTM_RETRY, its writes are discarded
 * (its reads are kept: a later wait watches them too) and second(tx, arg)
 * runs instead.  Returns what second returns in that case (AXSTM_RETRY if
 * both retried), otherwise what first returned.  Nests.  Call it from inside
 * a body only (AXSTM_EINVAL otherwise).
 */
AXSTM_API int axstm_or_else(axstm_txn *tx, axstm_fn first, axstm_fn second, void *arg);

/* ------------------------------------------------------------------ */
/* Watches (event loops)                                              */
/* ------------------------------------------------------------------ */

/* A descriptor that fires on commits of some keys.  Free it before its
 * store: after axstm_store_free, passing it to any function,
 * axstm_watch_free included, is undefined. */
typedef struct axstm_watch axstm_watch;

/*
 * Watches keys for commits: the watch's descriptor becomes readable (for
 * poll, epoll, select or libuv) once any of the keys is committed after the
 * watch was made or last re-armed; a delete is a commit too.  Keys that do
 * not exist yet can be watched (no key is created): the watch fires when a
 * commit creates them.  A watched key that is deleted and created again is
 * still watched.  nkeys may be 0 (a watch that never fires).  *out is owned
 * by the caller (axstm_watch_free).  Returns AXSTM_OK, AXSTM_EINVAL,
 * AXSTM_E2BIG, AXSTM_BUSY_RETRY (a table shard was busy at that instant) or
 * AXSTM_ENOMEM (out of memory or of file descriptors).  May wait only as
 * the Blocking section at the top says.  A commit pays nothing for watches
 * on keys it does not write.
 */
AXSTM_API int axstm_watch_new(axstm_store *s, const char *const keys[], size_t nkeys,
                              axstm_watch **out);

/*
 * The watch's file descriptor (owned by the watch: do not read, write or
 * close it; poll it for readability).  AXSTM_EINVAL for NULL.
 */
AXSTM_API int axstm_watch_fd(const axstm_watch *w);

/*
 * Consumes the event(s) that made the descriptor readable, so that it
 * becomes readable again only after the next commit of a watched key.
 * Returns AXSTM_OK (whether or not an event was pending) or AXSTM_EINVAL.
 * Never blocks.
 */
AXSTM_API int axstm_watch_rearm(axstm_watch *w);

/* Stops watching, closes the descriptor and frees the watch.  NULL: no-op.
 * Safe while other threads commit the watched keys. */
AXSTM_API void axstm_watch_free(axstm_watch *w);

/*
 * axstm_atomically for event loops: never blocks.  Conflicts are re-run at
 * once a bounded number of times, then AXSTM_BUSY_RETRY is returned (call
 * again later).  When the body returns AXSTM_RETRY, so does this call, and
 * *w becomes a new watch (owned by the caller) over every key the attempt
 * read: wait for its descriptor, free it, and call again.  *w is written only
 * when AXSTM_RETRY is returned.  Other results are as for axstm_atomically.
 */
AXSTM_API int axstm_try_atomically(axstm_store *s, axstm_fn fn, void *arg, axstm_watch **w);

/* ------------------------------------------------------------------ */
/* Introspection                                                      */
/* ------------------------------------------------------------------ */

typedef struct axstm_stats {
    uint64_t keys;           /* keys in the store */
    uint64_t commits;        /* successful commits */
    uint64_t conflicts;      /* commits rejected with CONCURRENT_UPDATE */
    uint64_t busy;           /* calls that returned BUSY_RETRY */
    uint64_t retries_waited; /* transactions that waited in AXSTM_RETRY */
    uint64_t bytes;          /* memory held by the store */
} axstm_stats;

/*
 * Fills *out with the store's counters, summed over all threads (each
 * counter is exact once the threads updating it have finished).
 * Returns AXSTM_OK or AXSTM_EINVAL.
 */
AXSTM_API int axstm_store_stats(axstm_store *s, axstm_stats *out);

/*
 * Called once per key by axstm_store_foreach: key, its committed version and
 * value (data NULL and len 0 when the key has no value).  All pointers are
 * borrowed for the duration of the call.  Return 0 to go on; anything else
 * stops the walk.
 */
typedef int (*axstm_visit_fn)(const char *key, uint64_t version,
                              const void *data, size_t len, void *arg);

/*
 * Visits every key of the store (Axon's dump()), including keys that never
 * got a value; each visit sees one committed state of that key.  Keys created
 * or deleted during the walk may or may not be visited.  visit may call any
 * function of this library (except freeing the store), and may take as long
 * as it likes: the walk holds nothing that stops other threads' replaced
 * values from being freed meanwhile, only the visited key's name and bytes.
 * Returns AXSTM_OK, AXSTM_EINVAL, or the first non-zero value returned by
 * visit.  May spin while a commit of the visited key is in flight.
 */
AXSTM_API int axstm_store_foreach(axstm_store *s, axstm_visit_fn visit, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* AXSTM_H */
