/* SPDX-License-Identifier: MIT */
/*
 * axstm.h -- software transactional memory as a store of named values.
 *
 * axstm brings Kamaelia's Axon.STM to C: a Store holds named, versioned
 * values.  You check values out (axstm_usevar, axstm_using), change your
 * private copies and commit them.  A commit fails with
 * AXSTM_CONCURRENT_UPDATE when someone else committed one of those keys
 * after you checked it out (redo your work), or with AXSTM_BUSY_RETRY when a
 * lock the call needs was held at that instant (simply call again).  On top
 * of the store, transactions (axstm_atomically) run a function atomically,
 * re-run it on conflicts, and can wait for a change (AXSTM_RETRY) or try
 * alternatives (axstm_or_else); watches let an event loop wait for commits.
 *
 * How each function is documented
 * -------------------------------
 * Every function's comment gives, in this order: what it does, in one
 * sentence, then more where needed; each argument (@name); and then
 *   Returns:    what it returns: every code it can return, and when;
 *   Ownership:  who owns what afterwards.  "Owned by the caller": the
 *               caller frees it with the function named.  "Borrowed": the
 *               caller uses it until the point named and never frees it;
 *   Blocking:   whether it may wait for another thread, and on what (see
 *               Blocking, below);
 *   Threads:    which threads may make the call (see Thread safety).
 *
 * Thread safety
 * -------------
 * Every function taking an axstm_store may be called from any number of
 * threads at once; no thread needs to register.  A handle (axstm_value,
 * axstm_collection, axstm_watch) belongs to one thread at a time, its
 * owner: the thread that made it, or the one it was passed to with your
 * own synchronisation.  A value borrowed from a collection goes with its
 * collection.  An axstm_txn is valid only inside the body it was passed to,
 * on that body's thread.  The functions that take no store or handle
 * (axstm_strerror, axstm_version, axstm_version_string) may be called from
 * any thread at any time.
 *
 * Each thread that calls the library gets, on its first call, a per-thread
 * slot of its own for its bookkeeping, given back when the thread exits;
 * up to 64 threads alive at once have one each, and further threads share
 * one more slot (correct, but their bookkeeping takes atomic instructions).
 * Each thread also keeps a few freed handle blocks for its next checkouts,
 * freed when it exits.
 *
 * Memory ordering
 * ---------------
 * A successful commit (axstm_value_commit, axstm_values_commit,
 * axstm_collection_commit, or a transaction's, when axstm_atomically or its
 * variants return AXSTM_OK)
 * publishes its writes with release semantics.  A call that sees a
 * committed value acquires it: a checkout (axstm_usevar, axstm_using,
 * axstm_value_refresh, axstm_collection_refresh), axstm_txn_get and
 * axstm_txn_get_i64, and an axstm_store_foreach visit.  So everything the
 * committing thread wrote before the commit, in the store or elsewhere, is
 * visible to a thread once it has seen a value that commit wrote.  A call
 * that fails (returns anything but AXSTM_OK) orders nothing, and nor does a
 * watch's descriptor becoming readable: check the keys out to see, and
 * acquire, what was committed.
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
 *     when one of the keys is locked at that instant (being committed, or
 *     held by the transaction running irrevocably, see axstm_atomically);
 *   - creating a key takes the lock of one of 64 table shards, so it returns
 *     BUSY_RETRY only when another thread is changing the same shard at
 *     that instant;
 *   - a commit takes the lock of each of its keys; commits of disjoint keys
 *     never touch a common lock.  A commit also answers BUSY_RETRY when the
 *     transaction running irrevocably is waiting to lock one of its keys:
 *     commits leave such a key to it, which is how it gets through a
 *     stream of commits to that key.  Waking the waiters and watches of the
 *     keys it wrote takes no lock either (a semaphore post, or a write to a
 *     watch's eventfd per watch, once until the watch is re-armed), so a
 *     commit's cost depends only on the waiters of the keys it writes.
 * Registering on keys (watches, and transactions about to wait) takes one
 * of 64 mutexes of the store per key, shared only with other registrations,
 * held for a few instructions and never across a system call:
 *   - axstm_watch_new and axstm_watch_free (and axstm_try_atomically when
 *     it hands out a watch) may wait that long for another thread
 *     registering or unregistering on a key of the same mutex;
 *     axstm_watch_free also waits, if a commit is writing to the watch's
 *     descriptor at that instant, for that write to finish.
 * The first handle a thread frees, and the thread's exit, take a mutex of
 * the process (its list of handle caches), held for a few instructions or
 * across another thread's fork().  A call that frees replaced values (a
 * commit, say) may make a membarrier system call, which returns once every
 * running thread of the process has executed a memory barrier; it waits
 * for no lock.
 * The functions that may block say so:
 *   - axstm_atomically blocks in AXSTM_RETRY until a key it read changes, and
 *     sleeps briefly in its backoff after conflicts.  A transaction that has
 *     lost 8 times in a row runs irrevocably: it takes a store mutex that only
 *     such transactions use (waiting, meanwhile, for another one's body to
 *     end), locks each key it touches, waiting out a commit that holds it,
 *     and holds those locks until its body ends, so other calls on those
 *     keys see BUSY_RETRY meanwhile.  axstm_atomically_timed does all this
 *     only until its deadline, and never waits for that mutex (while
 *     another holds it, it runs as usual);
 *   - axstm_store_foreach spins while the key it is about to visit is
 *     locked: by a commit or checkout in flight, or by the irrevocable
 *     transaction until that transaction's body ends.
 * axstm_try_atomically is the non-blocking way to run a transaction.
 * While another thread is in fork(), commits and key creations return
 * AXSTM_BUSY_RETRY, and an irrevocable transaction's commit waits for the
 * fork to finish (see fork, below).
 *
 * Threads that are cancelled or exit
 * ----------------------------------
 * A thread may be cancelled (pthread_cancel, with the default deferred
 * cancellation) or exit at any point where it is not inside a call of this
 * library, and the store stays fully usable.  Inside a call:
 *   - axstm_atomically and axstm_atomically_timed may be cancelled while
 *     they sleep (waiting in AXSTM_RETRY, or in backoff): the wait is undone
 *     and nothing else is held.  These are the library's only cancellation
 *     points;
 *   - nowhere else does a call act on a cancellation request: the system
 *     calls that are cancellation points (drawing a new store's hash key,
 *     reading, writing and closing watch descriptors, waking watchers at
 *     commit) run with cancellation disabled, and the caller's state is
 *     restored after them, so a pending request acts at the caller's next
 *     cancellation point;
 *   - a transaction body or a foreach visitor must not exit or be cancelled
 *     (nor longjmp out): the call holds a read pin or the visited key, and
 *     an irrevocable body holds key locks, which would then never be
 *     released.
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
 * starts.  A store kept in Redis (axstm_store_open) is usable on both sides
 * of a fork: the child never uses the parent's connections, it opens its
 * own.
 * For this the library registers fork handlers (pthread_atfork) with its
 * first axstm_store_new: fork() waits for the commits and key creations
 * under way to finish, so that no store is copied halfway through one.
 * The child calls malloc and free (axstm_store_free does), which POSIX
 * allows only after exec but glibc's allocator, and allocators with fork
 * handlers of their own, allow at once; the sanitizers' runtimes may not.
 *
 * Errors
 * ------
 * Every function that can fail returns AXSTM_OK (0) or a negative code,
 * but for axstm_store_new (NULL), axstm_watch_fd (a descriptor) and
 * axstm_atomically and its variants (which also pass on a body's own
 * codes).  A failed call has no effect (but
 * for keys a checkout created, see axstm_usevar), and out-parameters are
 * written only on AXSTM_OK (axstm_try_atomically's watch: only on
 * AXSTM_RETRY).  The library never aborts, prints or exits.
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
#define AXSTM_CODE_MAP(XX)                                                                    \
    XX(OK, 0, "success")                                                                      \
    XX(CONCURRENT_UPDATE, -1, "a key was committed by someone else since it was checked out") \
    XX(BUSY_RETRY, -2, "a lock was busy; nothing changed, call again")                        \
    XX(RETRY, -3, "wait until something read has changed")                                    \
    XX(ETIMEDOUT, -4, "timed out")                                                            \
    XX(EINVAL, -5, "invalid argument")                                                        \
    XX(E2BIG, -6, "key or value too long")                                                    \
    XX(ENOMEM, -7, "out of memory")                                                           \
    XX(ENOVALUE, -8, "the key has no value")                                                  \
    XX(ETYPE, -9, "the value has the wrong size for this type")                               \
    XX(EIO, -10, "the store's server could not be reached or failed the call")                \
    XX(EINDOUBT, -11, "the connection was lost after a commit was sent: refresh to see it")

enum axstm_code {
#define AXSTM_CODE_ENUM_(name, value, msg) AXSTM_##name = (value),
    AXSTM_CODE_MAP(AXSTM_CODE_ENUM_)
#undef AXSTM_CODE_ENUM_
};

/*
 * Describes a code in a short English phrase.
 *
 * @code:  any int: a code of the list above, or one of the caller's own.
 *
 * Returns:   the code's phrase, never NULL: "unknown error" for a negative
 *            code not in the list, "caller-defined code" for any positive
 *            one.
 * Ownership: the string is the library's, static: never free or change it.
 * Blocking:  never waits.
 * Threads:   any thread.
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

/* A store of named, versioned values. */
typedef struct axstm_store axstm_store;

/*
 * Creates an empty store.  Its key hash is seeded at random, so keys chosen
 * by an attacker cannot pile up in one bucket.  The first call in a process
 * also registers the library's fork handlers (see fork, above).
 *
 * Returns:   the new store, or NULL only when out of memory.
 * Ownership: the store is owned by the caller: free it with
 *            axstm_store_free, after every handle made from it.
 * Blocking:  never waits; it makes a few system calls (the random seed, and
 *            once per process the library's setup).
 * Threads:   any thread; the store may then be used from any threads.
 */
AXSTM_API axstm_store *axstm_store_new(void);

/*
 * Frees a store and every value it holds.
 *
 * @s:  the store, or NULL (then nothing happens).
 *
 * Returns:   nothing.
 * Ownership: every handle made from s (values, collections, watches, those
 *            of axstm_try_atomically included) must have been freed first:
 *            passing one to any function afterwards, its free included, is
 *            undefined.  s itself is invalid afterwards.
 * Blocking:  never waits.
 * Threads:   any thread, but no other thread may be inside a call on s or
 *            on its handles, nor make one afterwards; and not from a
 *            transaction body or a foreach visitor on s.
 */
AXSTM_API void axstm_store_free(axstm_store *s);

/*
 * Opens a store by its address: an in-process store, or one kept in a
 * Redis server (7.0 or later) and shared by every process and machine that
 * opens the same server and prefix.
 *
 * @uri:  "mem:" (the same as axstm_store_new), or
 *        "redis://[user[:password]@]host[:port][/db][?options]", or
 *        "redis+unix:///path/to/socket[?options]".  options are name=value
 *        pairs joined by '&': prefix=NAME (the store's keys live under it
 *        in the server; default "axstm:"), timeout_ms=N (the longest any
 *        call waits for the server; default 1000), first_read=server or
 *        first_read=cache (below; default server), and for redis+unix
 *        db=N, user=NAME and password=SECRET.  Any part may hold %XX
 *        escapes.  The scheme is read without regard to case; anything
 *        else (an unknown or repeated option, a port out of range) makes
 *        the address invalid.
 * @out:  receives the store, on AXSTM_OK only.
 *
 * A store kept in Redis takes every call of this header with the same
 * rules as an in-process one: values and collections (each checkout and
 * each commit one round trip to the server), axstm_store_foreach,
 * axstm_store_stats, transactions (each first read of a key in an attempt
 * one round trip, checking every earlier read; the commit one more; a
 * read-only attempt none), AXSTM_RETRY and axstm_or_else (a wait is woken
 * by a commit of any process, through the server's pub/sub), timed
 * transactions, axstm_try_atomically and watches.  Two codes come in:
 * AXSTM_EIO (the server could not be reached, refused, timed out or
 * failed the call; nothing changed) and AXSTM_EINDOUBT (a commit's
 * connection was lost after the commit was sent and, within one more
 * timeout, the server could not be asked whether it ran: it took effect
 * entirely or not at all; refresh to see which).  When the server can be
 * asked, a lost answer is looked up in its commit record instead, so a
 * restart mostly costs nothing but time.  A server that is loading its
 * data or busy answers AXSTM_BUSY_RETRY; one out of memory, AXSTM_ENOMEM
 * with nothing written.  Data under the prefix that this library did not
 * write is AXSTM_EIO, never overwritten.  The first wait or watch starts
 * one thread per store, which holds one more connection, subscribed to
 * the store's changes.  A remote transaction never runs irrevocably: one
 * that keeps losing to others backs off between attempts, and after 8
 * lost attempts in a row holds its keys for at most one timeout (other
 * clients' commits of them answer AXSTM_BUSY_RETRY meanwhile).
 *
 * first_read=cache: an attempt's first read is answered with no round
 * trip from what this process last learnt of the key (its own reads,
 * checkouts and commits; a bounded cache of small keys and values), when
 * it knows something; the server checks it with the next read or the
 * commit, or before the call returns.  A two-key transfer then costs two
 * round trips instead of three.  The body still never sees two states
 * mixed, and what the call returns is as of a moment inside it; but an
 * attempt that is then run again may have seen a value that another
 * client had replaced before the call began.  The default, server, reads
 * every key as of a moment inside the call, aborted attempts included.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_EINVAL: uri or out NULL, a malformed address, an unknown
 *            scheme, or a scheme this build does not support (redis needs
 *            the library built with hiredis);
 *            AXSTM_EIO: no server at the address, or it refused us (a
 *            wrong password), or did not answer within timeout_ms;
 *            AXSTM_BUSY_RETRY: the server is loading its data;
 *            AXSTM_ENOMEM.
 * Ownership: the store is owned by the caller: free it with
 *            axstm_store_free, which closes what it opened (keys stored in
 *            the server stay there).
 * Blocking:  waits for the server, at most timeout_ms per connection step
 *            (a host name is looked up first, which may take longer).
 * Threads:   any thread; the store may then be used from any threads.
 */
AXSTM_API int axstm_store_open(const char *uri, axstm_store **out);

/* ------------------------------------------------------------------ */
/* Values (Axon usevar)                                               */
/* ------------------------------------------------------------------ */

/* A handle on one key: a private copy of its value and version.  Free it
 * before its store: after axstm_store_free, passing it to any function,
 * axstm_value_free included, is undefined. */
typedef struct axstm_value axstm_value;

/*
 * Checks out one key: a new handle holding a private snapshot of the key's
 * committed value and version.  A missing (or deleted) key is created, at
 * version 0 with no value, and stays in the store even if nothing is ever
 * committed to it; creating it is not a commit (no watch fires).
 *
 * @s:    the store.
 * @key:  a non-empty NUL-terminated string of at most AXSTM_KEY_MAX bytes;
 *        the handle keeps its own copy.
 * @out:  receives the handle, on AXSTM_OK only.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_EINVAL: s, key or out NULL, or key empty;
 *            AXSTM_E2BIG: key longer than AXSTM_KEY_MAX;
 *            AXSTM_ENOMEM: out of memory;
 *            AXSTM_BUSY_RETRY: a lock was held at that instant (the key was
 *            locked, by a commit, a checkout or the irrevocable
 *            transaction; creating it, its table shard was being changed or
 *            another thread was in fork(); or it kept being deleted as it
 *            was created): call again.
 *            On EINVAL, E2BIG and ENOMEM no key is created.  A BUSY_RETRY
 *            may come after the key was created (someone committed it at
 *            that instant); the key then stays, exactly as the repeated
 *            call will find it.
 * Ownership: *out is owned by the caller: free it with axstm_value_free,
 *            before the store.
 * Blocking:  never waits.
 * Threads:   any thread, which becomes the handle's owner.
 */
AXSTM_API int axstm_usevar(axstm_store *s, const char *key, axstm_value **out);

/*
 * Gives the handle's key.
 *
 * @v:  a handle (own or borrowed from a collection), or NULL.
 *
 * Returns:   the key; NULL when v is NULL.
 * Ownership: borrowed: the handle's own copy, valid until the handle (for a
 *            borrowed value, its collection) is freed.
 * Blocking:  never waits.
 * Threads:   the handle's owner.
 */
AXSTM_API const char *axstm_value_key(const axstm_value *v);

/*
 * Gives the committed version the handle is based on: the one checked out,
 * or the one its last successful commit wrote.
 *
 * @v:  a handle (own or borrowed), or NULL.
 *
 * Returns:   the version; 0 when the key has not been committed since it
 *            was created, and for a NULL v.  On a store in this process
 *            a key's version starts again at 0 after 2^58 - 1 commits of
 *            it (nine years at a billion commits a second); whether a
 *            commit conflicts never depends on the number.
 * Ownership: nothing changes hands.
 * Blocking:  never waits.
 * Threads:   the handle's owner.
 */
AXSTM_API uint64_t axstm_value_version(const axstm_value *v);

/*
 * Gives the handle's current bytes: what was checked out, or what was last
 * set.
 *
 * @v:    a handle (own or borrowed), or NULL.
 * @len:  receives their length (0 when there is no value); may be NULL.
 *
 * Returns:   the bytes; NULL when the key has no value, when the handle is
 *            marked for deletion (axstm_value_delete), and for a NULL v.  An
 *            empty value gives a non-NULL pointer with *len 0.
 * Ownership: borrowed from the handle: valid until its next set, delete or
 *            refresh (for a borrowed value, its collection's refresh), or
 *            until it is freed.  A commit leaves them in place.
 * Blocking:  never waits.
 * Threads:   the handle's owner.
 */
AXSTM_API const void *axstm_value_data(const axstm_value *v, size_t *len);

/*
 * Replaces the handle's private copy with a copy of len bytes from data.
 * Nothing in the store changes until the handle (or its collection) is
 * committed.
 *
 * @v:     a handle (own or borrowed).
 * @data:  the bytes; may be NULL only when len is 0.
 * @len:   0 (an empty value, not "no value") to AXSTM_VALUE_MAX.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_EINVAL: v NULL, or data NULL with len not 0;
 *            AXSTM_E2BIG: len over AXSTM_VALUE_MAX;
 *            AXSTM_ENOMEM: out of memory (the handle keeps its old bytes).
 * Ownership: the handle keeps its own copy; data stays the caller's.  On
 *            AXSTM_OK, bytes borrowed from the handle before are invalid.
 * Blocking:  never waits.
 * Threads:   the handle's owner.
 */
AXSTM_API int axstm_value_set(axstm_value *v, const void *data, size_t len);

/*
 * Reads the handle's value as an int64_t in host byte order.
 *
 * @v:    a handle (own or borrowed).
 * @out:  receives the number, on AXSTM_OK only.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_EINVAL: v or out NULL;
 *            AXSTM_ENOVALUE: the key has no value (or the handle is marked
 *            for deletion);
 *            AXSTM_ETYPE: the value is not exactly 8 bytes long.
 * Ownership: nothing changes hands.
 * Blocking:  never waits.
 * Threads:   the handle's owner.
 */
AXSTM_API int axstm_value_get_i64(const axstm_value *v, int64_t *out);

/*
 * Sets the handle's private copy to the 8 bytes of x in host byte order,
 * as axstm_value_set does.
 *
 * @v:  a handle (own or borrowed).
 * @x:  the number.
 *
 * Returns:   AXSTM_OK; AXSTM_EINVAL: v NULL.  (Eight bytes are held in the
 *            handle itself: this never runs out of memory.)
 * Ownership: as for axstm_value_set.
 * Blocking:  never waits.
 * Threads:   the handle's owner.
 */
AXSTM_API int axstm_value_set_i64(axstm_value *v, int64_t x);

/*
 * Reads the handle's value as a string.
 *
 * @v:    a handle (own or borrowed).
 * @out:  receives the string, on AXSTM_OK only.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_EINVAL: v or out NULL;
 *            AXSTM_ENOVALUE: the key has no value (or the handle is marked
 *            for deletion);
 *            AXSTM_ETYPE: the value does not end with its first NUL byte
 *            (it is empty, has none, or has one before its end).
 * Ownership: *out points into the handle's bytes: borrowed, as the bytes of
 *            axstm_value_data are.
 * Blocking:  never waits.
 * Threads:   the handle's owner.
 */
AXSTM_API int axstm_value_get_str(const axstm_value *v, const char **out);

/*
 * Sets the handle's private copy to str with its NUL, as axstm_value_set
 * does.
 *
 * @v:    a handle (own or borrowed).
 * @str:  a NUL-terminated string.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_EINVAL: v or str NULL;
 *            AXSTM_E2BIG: str with its NUL is longer than AXSTM_VALUE_MAX;
 *            AXSTM_ENOMEM: out of memory (the handle keeps its old bytes).
 * Ownership: as for axstm_value_set.
 * Blocking:  never waits.
 * Threads:   the handle's owner.
 */
AXSTM_API int axstm_value_set_str(axstm_value *v, const char *str);

/*
 * Publishes the handle: its value, changed or not ("no value" included),
 * or the deletion of its key (axstm_value_delete).
 *
 * Rejected with AXSTM_CONCURRENT_UPDATE if and only if the key was
 * committed since the handle's version: its committed version is greater
 * than the handle's, or it was deleted since (even if created again).
 * Then nothing is written and the handle is unchanged: refresh it and redo
 * the work.  On success the key's version becomes the handle's version + 1,
 * and the handle's version is bumped in place, so that it can be changed
 * and committed again.
 *
 * @v:  a handle made by axstm_usevar (not one borrowed from a collection).
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_CONCURRENT_UPDATE: as above;
 *            AXSTM_BUSY_RETRY: nothing changed; call again.  The key's lock
 *            was held at that instant (by a commit, a checkout, or the
 *            irrevocable transaction), the irrevocable
 *            transaction was waiting to lock the key (commits leave it to
 *            that transaction), or another thread was in fork();
 *            AXSTM_EINVAL: v NULL, or borrowed from a collection.
 * Ownership: the handle and its bytes stay the caller's; the store keeps
 *            its own reference to the value.
 * Blocking:  never waits.
 * Threads:   the handle's owner; others may use the key meanwhile.
 */
AXSTM_API int axstm_value_commit(axstm_value *v);

/*
 * Drops the handle's local changes and checks its key out again: its
 * committed value and version now.  A key deleted since is created afresh,
 * as axstm_usevar does (version 0, no value).
 *
 * @v:  a handle made by axstm_usevar (not one borrowed from a collection).
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_BUSY_RETRY: as for axstm_usevar;
 *            AXSTM_ENOMEM: the key had to be created and memory ran out;
 *            AXSTM_EINVAL: v NULL, or borrowed from a collection.
 *            On failure the handle is unchanged (a BUSY_RETRY may still
 *            leave the key created, as for axstm_usevar).
 * Ownership: on AXSTM_OK, bytes borrowed from the handle before are
 *            invalid.
 * Blocking:  never waits.
 * Threads:   the handle's owner.
 */
AXSTM_API int axstm_value_refresh(axstm_value *v);

/*
 * Frees a handle made by axstm_usevar, with its private copy.
 *
 * @v:  the handle; NULL or a value borrowed from a collection (which goes
 *      with its collection): then nothing happens.
 *
 * Returns:   nothing.
 * Ownership: v, and the bytes borrowed from it, are invalid afterwards.
 * Blocking:  never waits but, the first time a thread frees a handle, for
 *            a mutex of the process, held for a few instructions or across
 *            another thread's fork() (see Blocking).
 * Threads:   the handle's owner; before axstm_store_free.
 */
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
 * instant).  Missing (or deleted) keys are created as by axstm_usevar, all
 * at once.  Duplicate keys count once: the collection holds the distinct
 * keys in the order of their first appearance.
 *
 * @s:      the store.
 * @keys:   nkeys keys, each as for axstm_usevar; may be NULL when nkeys is
 *          0 (an empty collection).  The collection keeps its own copies.
 * @nkeys:  how many keys there are.
 * @out:    receives the collection, on AXSTM_OK only.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_EINVAL: s or out NULL, keys NULL with nkeys not 0, or a
 *            key NULL or empty;
 *            AXSTM_E2BIG: a key longer than AXSTM_KEY_MAX;
 *            AXSTM_ENOMEM: out of memory;
 *            AXSTM_BUSY_RETRY: as for axstm_usevar, for any of the keys.
 *            On ENOMEM, EINVAL and E2BIG no key is created; a BUSY_RETRY
 *            that comes after the creation (a key committed at that
 *            instant) leaves them created, as the repeated call will find
 *            them.
 * Ownership: *out is owned by the caller: free it with
 *            axstm_collection_free, before the store.
 * Blocking:  never waits.
 * Threads:   any thread, which becomes the collection's owner.
 */
AXSTM_API int axstm_using(axstm_store *s, const char *const keys[], size_t nkeys,
                          axstm_collection **out);

/*
 * Counts the distinct keys of the collection.
 *
 * @c:  the collection, or NULL.
 *
 * Returns:   the number of keys; 0 for a NULL c.
 * Ownership: nothing changes hands.
 * Blocking:  never waits.
 * Threads:   the collection's owner.
 */
AXSTM_API size_t axstm_collection_size(const axstm_collection *c);

/*
 * Gives the i-th value of the collection, in the order of the keys' first
 * appearance: read and change it with the axstm_value_* functions, commit
 * it with the collection (axstm_value_commit and axstm_value_refresh on it
 * return AXSTM_EINVAL; axstm_value_free does nothing).
 *
 * @c:  the collection, or NULL.
 * @i:  0 to axstm_collection_size(c) - 1.
 *
 * Returns:   the value; NULL when i is out of range or c is NULL.
 * Ownership: borrowed from the collection: valid until it is freed (the
 *            same value across commits and refreshes).
 * Blocking:  never waits.
 * Threads:   the collection's owner.
 */
AXSTM_API axstm_value *axstm_collection_at(axstm_collection *c, size_t i);

/*
 * Gives the collection's value for key, as axstm_collection_at does.
 *
 * @c:    the collection, or NULL.
 * @key:  a key, compared as a string; or NULL.
 *
 * Returns:   the value; NULL when key is not in the collection, or c or key
 *            is NULL.
 * Ownership: borrowed, as for axstm_collection_at.
 * Blocking:  never waits.
 * Threads:   the collection's owner.
 */
AXSTM_API axstm_value *axstm_collection_value(axstm_collection *c, const char *key);

/*
 * Commits every value of the collection, all or nothing, atomically with
 * respect to every other checkout and commit.
 *
 * Rejected with AXSTM_CONCURRENT_UPDATE if and only if some key was
 * committed since the collection's version of it (as for
 * axstm_value_commit); then nothing is written and the collection is
 * unchanged.  On success every key is written (changed or not; a value
 * marked for deletion removes its key) and every version is bumped in
 * place.  An empty collection commits successfully and does nothing.
 *
 * @c:  the collection.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_CONCURRENT_UPDATE: as above;
 *            AXSTM_BUSY_RETRY: as for axstm_value_commit, for any of the
 *            keys (nothing changed: call again);
 *            AXSTM_EINVAL: c NULL.
 * Ownership: the collection and its bytes stay the caller's; the store
 *            keeps its own reference to each value.
 * Blocking:  never waits.
 * Threads:   the collection's owner; others may use the keys meanwhile.
 */
AXSTM_API int axstm_collection_commit(axstm_collection *c);

/*
 * Commits several handles together, all or nothing, as
 * axstm_collection_commit commits a collection's: the path for a program
 * that keeps a handle per key it uses again and again (made once with
 * axstm_usevar, each name looked up once) and commits any few of them
 * together, with no lookup, checkout or allocation per commit.
 *
 * Rejected with AXSTM_CONCURRENT_UPDATE if and only if some key was
 * committed since its handle's version (as for axstm_value_commit); then
 * nothing is written and every handle is unchanged: refresh those that
 * are behind (axstm_value_refresh) and redo the work.  On success every
 * key is written (changed or not; a handle marked for deletion removes its
 * key) and every handle's version is bumped in place, so that the handles
 * can be changed and committed again.  n = 0 commits successfully and does
 * nothing.
 *
 * @values:  n handles made by axstm_usevar on one store (not borrowed
 *           from a collection), each of a different key.
 * @n:       how many.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_CONCURRENT_UPDATE: as above;
 *            AXSTM_BUSY_RETRY: as for axstm_value_commit, for any of the
 *            keys (nothing changed: call again);
 *            AXSTM_EINVAL: values NULL with n > 0, a handle NULL or
 *            borrowed from a collection, handles of different stores, or
 *            two handles of the same key;
 *            AXSTM_ENOMEM: more than 8 handles and no memory for the
 *            lock order (nothing changed).
 *            On a store kept in Redis, also the codes of a remote call
 *            (axstm_store_open).
 * Ownership: the handles and their bytes stay the caller's; the store
 *            keeps its own reference to each value.
 * Blocking:  never waits (on a store kept in Redis: for the server only).
 * Threads:   the handles' owner; others may use the keys meanwhile.
 */
AXSTM_API int axstm_values_commit(axstm_value *const values[], size_t n);

/*
 * Refreshes several handles together, as axstm_collection_refresh does a
 * collection's: local changes are dropped and every handle gets its key's
 * committed value and version, all as of one moment (a consistent
 * snapshot of the keys).  A key deleted since its handle was made is
 * created afresh (version 0, no value), as axstm_value_refresh does.  The
 * complement of axstm_values_commit: after a conflict, the handles that
 * lost are brought up to date together, in one round trip on a store kept
 * in Redis.  n = 0 succeeds and does nothing.
 *
 * @values:  n handles made by axstm_usevar on one store (not borrowed
 *           from a collection), each of a different key.
 * @n:       how many.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_BUSY_RETRY: a key was being committed (or, over and
 *            over, deleted) at that instant: nothing changed, call again;
 *            AXSTM_EINVAL: as for axstm_values_commit (nothing changed);
 *            AXSTM_ENOMEM: out of memory (nothing changed).
 *            On a store kept in Redis, also the codes of a remote call
 *            (axstm_store_open).
 * Ownership: the handles stay the caller's; their old bytes are released.
 * Blocking:  never waits (on a store kept in Redis: for the server only).
 * Threads:   the handles' owner; others may use the keys meanwhile.
 */
AXSTM_API int axstm_values_refresh(axstm_value *const values[], size_t n);

/*
 * Drops all local changes and takes a new consistent snapshot of the same
 * keys; keys deleted since are created afresh, as by axstm_using.
 *
 * @c:  the collection.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_BUSY_RETRY: as for axstm_using;
 *            AXSTM_ENOMEM: a key had to be created and memory ran out;
 *            AXSTM_EINVAL: c NULL.
 *            On failure the collection is unchanged (a BUSY_RETRY may
 *            still leave keys created, as for axstm_using).
 * Ownership: the borrowed values stay valid; on AXSTM_OK, bytes borrowed
 *            from them before are invalid.
 * Blocking:  never waits.
 * Threads:   the collection's owner.
 */
AXSTM_API int axstm_collection_refresh(axstm_collection *c);

/*
 * Frees a collection and the values it lent.
 *
 * @c:  the collection, or NULL (then nothing happens).
 *
 * Returns:   nothing.
 * Ownership: c, its values and the bytes borrowed from them are invalid
 *            afterwards.
 * Blocking:  as axstm_value_free.
 * Threads:   the collection's owner; before axstm_store_free.
 */
AXSTM_API void axstm_collection_free(axstm_collection *c);

/* ------------------------------------------------------------------ */
/* Deleting keys                                                      */
/* ------------------------------------------------------------------ */

/*
 * Marks the handle's key for deletion: a change of the private copy only,
 * like axstm_value_set (axstm_value_data then returns NULL).
 *
 * The next successful commit of the handle (or of its collection) removes
 * the key from the store, together with everything else that commit
 * writes.  That is a commit of the key like any other: handles checked out
 * before it get AXSTM_CONCURRENT_UPDATE, watches on it fire, transactions
 * waiting on it wake.  After it axstm_store_foreach no longer visits the
 * key, axstm_stats.keys no longer counts it, and its memory is reclaimed
 * once no handle, watch or waiting transaction uses it.  A later
 * axstm_usevar of the name creates the key afresh (version 0, no value),
 * and no handle checked out before the delete can ever commit over it,
 * whatever the version numbers; nor can the deleting handle itself
 * (refresh it to go on using the name).  Transactions delete with
 * axstm_txn_delete, and read a deleted key as AXSTM_ENOVALUE.  A set or a
 * refresh before the commit drops the mark.
 *
 * @v:  a handle (own or borrowed).
 *
 * Returns:   AXSTM_OK; AXSTM_EINVAL: v NULL.
 * Ownership: bytes borrowed from the handle before are invalid.
 * Blocking:  never waits.
 * Threads:   the handle's owner.
 */
AXSTM_API int axstm_value_delete(axstm_value *v);

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
 * have effects outside tx that cannot be repeated.  Nor should it check
 * out or commit keys it touches through handles, or call
 * axstm_store_foreach: running irrevocably it holds the locks of the keys
 * it touched, so such a checkout or commit would answer AXSTM_BUSY_RETRY
 * for as long as it runs, and a foreach would wait for ever.
 */
typedef int (*axstm_fn)(axstm_txn *tx, void *arg);

/*
 * Runs fn(tx, arg) as one atomic, serializable transaction on s.
 *
 * Reads see one consistent snapshot, also before commit (opacity): a
 * running body never sees a state that no serial order could produce.
 * Only the keys written get new versions; the keys read are checked at
 * commit.  On a conflict the body is run again after a short randomised
 * backoff; a body that keeps losing (8 times in a row) is run irrevocably:
 * alone among such runs (a store mutex), it locks each key as it first
 * touches it and holds the locks until it ends, so it cannot fail and no
 * transaction starves.  When the body returns AXSTM_RETRY the call waits
 * until a key it read (in any axstm_or_else branch) is committed by someone
 * else, then runs it again.  A transaction that does not commit leaves the
 * store as it found it: no key created, none changed.
 *
 * @s:    the store.
 * @fn:   the body (see axstm_fn).
 * @arg:  passed to fn as it is.
 *
 * Returns:   AXSTM_OK once committed (or, writing nothing, once its reads
 *            were consistent);
 *            the body's own code, when it is none of 0, AXSTM_RETRY,
 *            AXSTM_CONCURRENT_UPDATE and AXSTM_BUSY_RETRY: rolled back,
 *            nothing published (a positive code of the caller's, or one
 *            passed back from an axstm_txn_* call, such as AXSTM_ENOVALUE
 *            or AXSTM_ENOMEM);
 *            AXSTM_EINVAL: s or fn NULL, called from inside a body, or the
 *            body returned AXSTM_RETRY without having read any key (it
 *            would wait for ever);
 *            AXSTM_ENOMEM: out of memory committing or getting ready to
 *            wait (nothing published).
 *            Never AXSTM_CONCURRENT_UPDATE or AXSTM_BUSY_RETRY: the body
 *            is run again instead.
 * Ownership: nothing changes hands; bytes the body got from axstm_txn_get
 *            are invalid once its run ends.
 * Blocking:  may wait: in AXSTM_RETRY until a key read changes (a
 *            semaphore); in backoff sleeps of up to about 1 ms after
 *            conflicts; and running irrevocably, for the store mutex (as
 *            long as another irrevocable body takes) and for each key's
 *            lock (while a commit holds it).  The waits in AXSTM_RETRY and
 *            backoff are cancellation points (see above).
 * Threads:   any thread, with any others on s; the body runs on the
 *            calling thread.
 */
AXSTM_API int axstm_atomically(axstm_store *s, axstm_fn fn, void *arg);

/*
 * Runs fn(tx, arg) as axstm_atomically does, but gives up once timeout_ns
 * nanoseconds have passed since the call began.
 *
 * The deadline holds however busy the keys are.  No wait in AXSTM_RETRY,
 * no backoff sleep and no wait for a key's lock goes past it, and once it
 * has passed, a run of the body that does not commit (it returned
 * AXSTM_RETRY, or lost a conflict) ends the call, so at most one run
 * begins after the deadline.  A timeout of 0 never waits: the body runs
 * once, and if it must wait or run again the call returns
 * AXSTM_ETIMEDOUT.  It runs irrevocably only while no other transaction
 * does.
 *
 * @s:           the store.
 * @fn:          the body (see axstm_fn).
 * @arg:         passed to fn as it is.
 * @timeout_ns:  0 or more nanoseconds (CLOCK_MONOTONIC).
 *
 * Returns:   as axstm_atomically, and
 *            AXSTM_ETIMEDOUT: the deadline came first (nothing published);
 *            AXSTM_EINVAL: also for a negative timeout_ns.
 * Ownership: as for axstm_atomically.
 * Blocking:  as axstm_atomically, until the deadline; never for the store
 *            mutex of irrevocable runs.
 * Threads:   as for axstm_atomically.
 */
AXSTM_API int axstm_atomically_timed(axstm_store *s, axstm_fn fn, void *arg, int64_t timeout_ns);

/*
 * Reads key inside a transaction: the transaction's own latest write of it,
 * or its committed value in the transaction's snapshot.
 *
 * A key that does not exist (or was deleted) reads as AXSTM_ENOVALUE and is
 * not created; AXSTM_RETRY can still wait on it, and wakes when a commit
 * creates it.
 *
 * @tx:    the running transaction (its body's argument).
 * @key:   as for axstm_usevar.
 * @data:  receives the bytes, on AXSTM_OK only; may be NULL to test for a
 *         value only.
 * @len:   receives their length, on AXSTM_OK only; may be NULL.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_ENOVALUE: the key has no value (none yet, no such key,
 *            or deleted, by this transaction too);
 *            AXSTM_EINVAL: tx NULL or not running on this thread, or key
 *            NULL or empty;
 *            AXSTM_E2BIG: key longer than AXSTM_KEY_MAX;
 *            AXSTM_CONCURRENT_UPDATE: the snapshot is gone (a key read has
 *            changed): return it;
 *            AXSTM_BUSY_RETRY: a lock was held at that instant (in a timed
 *            irrevocable run: until the deadline): return it;
 *            AXSTM_ENOMEM: out of memory.
 * Ownership: *data is borrowed: valid until this run of the body ends,
 *            whatever the body writes meanwhile.
 * Blocking:  never waits, but in an irrevocable run, for a commit holding
 *            the key (see axstm_atomically).
 * Threads:   the body's thread, inside the body.
 */
AXSTM_API int axstm_txn_get(axstm_txn *tx, const char *key, const void **data, size_t *len);

/*
 * Reads keys[0..nkeys) inside a transaction, all at once, as axstm_txn_get
 * would one by one: each counts as read (its commit is checked, and
 * AXSTM_RETRY waits on it), and later axstm_txn_get calls of them are
 * answered from the transaction's own copy.  A body that knows its keys
 * before it reads them says so here: on a store kept in Redis this is
 * one round trip for all of them instead of one per key, so that a
 * transfer between two accounts takes two round trips (this and the
 * commit), with every read as of a moment inside the call.  In process it
 * changes nothing but the order of the lookups.  Keys already read or
 * written by this attempt, and repeated keys, are passed over.
 *
 * @tx:     the running transaction (its body's argument).
 * @keys:   the names, each as for axstm_usevar; may be NULL only when
 *          nkeys is 0.
 * @nkeys:  how many.
 *
 * Returns:   AXSTM_OK (also for keys that have no value: they read as
 *            AXSTM_ENOVALUE afterwards);
 *            AXSTM_EINVAL: tx NULL or not running on this thread, keys
 *            NULL with nkeys not 0, or a key NULL or empty (nothing is
 *            read);
 *            AXSTM_E2BIG: a key longer than AXSTM_KEY_MAX (nothing is
 *            read);
 *            AXSTM_CONCURRENT_UPDATE, AXSTM_BUSY_RETRY, AXSTM_EIO: as for
 *            axstm_txn_get: return them;
 *            AXSTM_ENOMEM: out of memory.
 * Ownership: nothing changes hands.
 * Blocking:  as axstm_txn_get.
 * Threads:   the body's thread, inside the body.
 */
AXSTM_API int axstm_txn_prefetch(axstm_txn *tx, const char *const keys[], size_t nkeys);

/*
 * Writes a copy of len bytes from data to key inside a transaction: seen by
 * its later reads, published when it commits.  A key that does not exist
 * is created by the commit, not before.
 *
 * @tx:    the running transaction.
 * @key:   as for axstm_usevar.
 * @data:  the bytes; may be NULL only when len is 0.
 * @len:   0 (an empty value) to AXSTM_VALUE_MAX.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_EINVAL: tx NULL or not running on this thread, data NULL
 *            with len not 0, or key NULL or empty;
 *            AXSTM_E2BIG: key or len over its limit;
 *            AXSTM_BUSY_RETRY: a lock was held at that instant: return it;
 *            AXSTM_CONCURRENT_UPDATE: only in an irrevocable run, for a key
 *            that does not exist and was being taken out of the store's
 *            table at that instant: return it;
 *            AXSTM_ENOMEM: out of memory.
 * Ownership: the transaction keeps its own copy; data stays the caller's.
 *            Bytes got from axstm_txn_get stay valid.
 * Blocking:  as axstm_txn_get.
 * Threads:   the body's thread, inside the body.
 */
AXSTM_API int axstm_txn_set(axstm_txn *tx, const char *key, const void *data, size_t len);

/*
 * Deletes key inside a transaction: later reads of this transaction see no
 * value (AXSTM_ENOVALUE), and the commit removes the key (see
 * axstm_value_delete), all or nothing with the rest of the transaction.
 * A key that does not exist needs no delete: its absence is read instead
 * (no key is created, nothing is committed).
 *
 * @tx:   the running transaction.
 * @key:  as for axstm_usevar.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_EINVAL: tx NULL or not running on this thread, or key
 *            NULL or empty;
 *            AXSTM_E2BIG: key longer than AXSTM_KEY_MAX;
 *            AXSTM_CONCURRENT_UPDATE, AXSTM_BUSY_RETRY: as for
 *            axstm_txn_get (the first also when the key appeared since it
 *            was found missing): return them;
 *            AXSTM_ENOMEM: out of memory.
 * Ownership: bytes got from axstm_txn_get stay valid.
 * Blocking:  as axstm_txn_get.
 * Threads:   the body's thread, inside the body.
 */
AXSTM_API int axstm_txn_delete(axstm_txn *tx, const char *key);

/*
 * Reads key inside a transaction as an int64_t in host byte order, as
 * axstm_txn_get does.
 *
 * @tx:   the running transaction.
 * @key:  as for axstm_usevar.
 * @out:  receives the number, on AXSTM_OK only.
 *
 * Returns:   as axstm_txn_get, and
 *            AXSTM_ETYPE: the value is not exactly 8 bytes long;
 *            AXSTM_EINVAL: also for a NULL out.
 * Ownership: nothing changes hands.
 * Blocking:  as axstm_txn_get.
 * Threads:   the body's thread, inside the body.
 */
AXSTM_API int axstm_txn_get_i64(axstm_txn *tx, const char *key, int64_t *out);

/*
 * Writes the 8 bytes of x (host byte order) to key inside a transaction, as
 * axstm_txn_set does.
 *
 * @tx:   the running transaction.
 * @key:  as for axstm_usevar.
 * @x:    the number.
 *
 * Returns:   as axstm_txn_set.
 * Ownership: nothing changes hands.
 * Blocking:  as axstm_txn_get.
 * Threads:   the body's thread, inside the body.
 */
AXSTM_API int axstm_txn_set_i64(axstm_txn *tx, const char *key, int64_t x);

/*
 * Runs first(tx, arg); if it returns AXSTM_RETRY, discards its writes
 * (deletes included) and runs second(tx, arg) instead.  first's reads are
 * kept: a later wait watches them too.  Nests.
 *
 * @tx:      the running transaction.
 * @first:   a body, run first.
 * @second:  a body, run when first retries.
 * @arg:     passed to both as it is.
 *
 * Returns:   what second returns, when first returned AXSTM_RETRY
 *            (AXSTM_RETRY when both did); otherwise what first returned;
 *            AXSTM_EINVAL: tx NULL or not running on this thread, or first
 *            or second NULL.
 * Ownership: nothing changes hands; bytes first got from axstm_txn_get stay
 *            valid.
 * Blocking:  only as first and second do.
 * Threads:   the body's thread, inside the body.
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
 * watch was made or last re-armed; a delete is a commit too.
 *
 * Keys that do not exist yet can be watched (no key is created): the watch
 * fires when a commit creates them (a checkout that creates a key does not
 * commit it).  A watched key that is deleted and created again is still
 * watched.  A commit pays nothing for watches on keys it does not write.
 *
 * @s:      the store.
 * @keys:   nkeys keys, each as for axstm_usevar; may be NULL when nkeys is
 *          0 (a watch that never fires).
 * @nkeys:  how many keys there are.
 * @out:    receives the watch, on AXSTM_OK only.
 *
 * Returns:   AXSTM_OK;
 *            AXSTM_EINVAL: s or out NULL, keys NULL with nkeys not 0, or a
 *            key NULL or empty;
 *            AXSTM_E2BIG: a key longer than AXSTM_KEY_MAX;
 *            AXSTM_BUSY_RETRY: a table shard was busy, or another thread
 *            was in fork(), at that instant: call again;
 *            AXSTM_ENOMEM: out of memory or of file descriptors.
 * Ownership: *out is owned by the caller: free it with axstm_watch_free,
 *            before the store.
 * Blocking:  for each key, takes one of the store's 64 registration
 *            mutexes, which others hold for a few instructions; failing, it
 *            may wait as axstm_watch_free does.
 * Threads:   any thread, which becomes the watch's owner.
 */
AXSTM_API int axstm_watch_new(axstm_store *s, const char *const keys[], size_t nkeys,
                              axstm_watch **out);

/*
 * Gives the watch's file descriptor, to poll for readability.
 *
 * @w:  the watch, or NULL.
 *
 * Returns:   the descriptor (0 or more); AXSTM_EINVAL for a NULL w.
 * Ownership: the descriptor is the watch's: do not read, write or close it;
 *            axstm_watch_free closes it.
 * Blocking:  never waits.
 * Threads:   the watch's owner; the descriptor may be polled from any
 *            thread until the watch is freed.
 */
AXSTM_API int axstm_watch_fd(const axstm_watch *w);

/*
 * Consumes the event(s) that made the descriptor readable, so that it
 * becomes readable again only after the next commit of a watched key.
 *
 * @w:  the watch.
 *
 * Returns:   AXSTM_OK, whether or not an event was pending; AXSTM_EINVAL: w
 *            NULL.
 * Ownership: nothing changes hands.
 * Blocking:  never waits (the descriptor does not block).
 * Threads:   the watch's owner.
 */
AXSTM_API int axstm_watch_rearm(axstm_watch *w);

/*
 * Stops watching, closes the descriptor and frees the watch.  Safe while
 * other threads commit the watched keys.
 *
 * @w:  a watch of axstm_watch_new or axstm_try_atomically; or NULL (then
 *      nothing happens).
 *
 * Returns:   nothing.
 * Ownership: w is invalid afterwards, and its descriptor closed (take it
 *            out of any event loop first).
 * Blocking:  for each key, takes one of the store's 64 registration
 *            mutexes, which others hold for a few instructions; and if a
 *            commit is writing to the descriptor at that instant, waits
 *            (yielding) for that write to finish.
 * Threads:   the watch's owner; before axstm_store_free.
 */
AXSTM_API void axstm_watch_free(axstm_watch *w);

/*
 * Runs fn(tx, arg) as axstm_atomically does, but never sleeps: for event
 * loops.
 *
 * Conflicts are run again at once, never irrevocably, up to 64 in a row;
 * then the call returns AXSTM_BUSY_RETRY (call again later).  Its commit,
 * like a handle's, finds AXSTM_BUSY_RETRY also when the transaction
 * running irrevocably in another thread is waiting to lock one of its
 * keys; that counts as a conflict.  When the body returns AXSTM_RETRY, so
 * does this call, and *w becomes a new watch over every key the attempt
 * read (readable at once if one of them has changed since): wait for its
 * descriptor, free it, and call again.
 *
 * @s:    the store.
 * @fn:   the body (see axstm_fn).
 * @arg:  passed to fn as it is.
 * @w:    receives the watch, on AXSTM_RETRY only.
 *
 * Returns:   AXSTM_OK, and the body's own codes, as axstm_atomically;
 *            AXSTM_RETRY: the body retried; *w is set;
 *            AXSTM_BUSY_RETRY: 64 conflicts in a row: call again later;
 *            AXSTM_EINVAL: s, fn or w NULL, called from inside a body, or
 *            the body returned AXSTM_RETRY without having read any key;
 *            AXSTM_ENOMEM: out of memory (or, for the watch, of file
 *            descriptors); nothing published.
 * Ownership: *w is owned by the caller: free it with axstm_watch_free,
 *            before the store.
 * Blocking:  never sleeps; handing out a watch takes registration mutexes
 *            as axstm_watch_new does.
 * Threads:   as for axstm_atomically.
 */
AXSTM_API int axstm_try_atomically(axstm_store *s, axstm_fn fn, void *arg, axstm_watch **w);

/* ------------------------------------------------------------------ */
/* Introspection                                                      */
/* ------------------------------------------------------------------ */

typedef struct axstm_stats {
    uint64_t keys;           /* keys in the store (deleted ones not) */
    uint64_t commits;        /* successful commits that wrote keys */
    uint64_t conflicts;      /* commits refused with CONCURRENT_UPDATE, and
                              * transaction runs that lost a conflict */
    uint64_t busy;           /* BUSY_RETRY answers, and transaction runs
                              * that met one */
    uint64_t retries_waited; /* waits in AXSTM_RETRY ended by a change */
    uint64_t bytes;          /* memory held by the store */
} axstm_stats;

/*
 * Fills *out with the store's counters, summed over all threads.
 *
 * @s:    the store.
 * @out:  receives the counters, on AXSTM_OK only.
 *
 * Returns:   AXSTM_OK; AXSTM_EINVAL: s or out NULL.
 * Ownership: nothing changes hands.
 * Blocking:  never waits.
 * Threads:   any thread.  Each counter is exact once the threads updating
 *            it have finished; meanwhile it may miss their latest events.
 */
AXSTM_API int axstm_store_stats(axstm_store *s, axstm_stats *out);

/*
 * Called once per key by axstm_store_foreach: key, its committed version and
 * value (data NULL and len 0 when the key has no value).  All pointers are
 * borrowed for the duration of the call.  Return 0 to go on; anything else
 * stops the walk.
 */
typedef int (*axstm_visit_fn)(const char *key, uint64_t version, const void *data, size_t len,
                              void *arg);

/*
 * Visits every key of the store (Axon's dump()), including keys that never
 * got a value; each visit sees one committed state of that key.
 *
 * Keys created or deleted during the walk may or may not be visited.  visit
 * may call any function of this library (except freeing the store), and
 * may take as long as it likes: the walk holds nothing that stops other
 * threads' replaced values from being freed meanwhile, only the visited
 * key's name and bytes.  (Should memory run short for its list of a
 * 64th of the keys, it visits those without letting go: a slow visit then
 * holds back the freeing of replaced values.)
 *
 * @s:      the store.
 * @visit:  called once per key (see axstm_visit_fn).
 * @arg:    passed to visit as it is.
 *
 * Returns:   AXSTM_OK once every key was visited; the first non-zero value
 *            visit returned; AXSTM_EINVAL: s or visit NULL.
 * Ownership: what visit is given is borrowed for that visit only.
 * Blocking:  spins (yielding) while the key it is about to visit is locked:
 *            by a commit or checkout in flight, or by the transaction
 *            running irrevocably, until that transaction's body ends (from
 *            inside that body: for ever).  Otherwise it waits only as visit
 *            does.
 * Threads:   any thread.
 */
AXSTM_API int axstm_store_foreach(axstm_store *s, axstm_visit_fn visit, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* AXSTM_H */
