/* SPDX-License-Identifier: MIT */
/*
 * address.h -- the address of a store, as axstm_store_open takes it:
 *
 *   mem:
 *   redis://[user[:password]@]host[:port][/db][?options]
 *   redis+unix:///path/to/socket[?options]
 *
 * options: name=value pairs joined by '&': prefix (default "axstm:"),
 * timeout_ms (default 1000), first_read (server, the default, or cache:
 * see redis_txn.c), and for redis+unix db (default 0), user and
 * password (what redis:// carries before its '@').  user,
 * password, path and option values may hold %XX escapes; a host may be
 * an IPv6 literal in brackets.  Parsing is strict: an unknown or repeated
 * option, a port or db that is not a plain decimal number in range, or a
 * character that cannot appear where it stands makes the whole address
 * invalid, so that a typing mistake is AXSTM_EINVAL rather than a store
 * opened somewhere else than meant.
 */
#ifndef AXSTM_ADDRESS_H
#define AXSTM_ADDRESS_H

#include <stdbool.h>

enum axstm__address_kind {
    AXSTM__ADDRESS_MEM,        /* an in-process store */
    AXSTM__ADDRESS_REDIS_TCP,  /* host and port */
    AXSTM__ADDRESS_REDIS_UNIX, /* a unix socket's path */
};

#define AXSTM__REDIS_DEFAULT_PORT 6379
#define AXSTM__DEFAULT_PREFIX "axstm:"
#define AXSTM__DEFAULT_TIMEOUT_MS 1000

struct axstm__address {
    enum axstm__address_kind kind;
    char *host;             /* REDIS_TCP: without brackets; else NULL */
    int port;               /* REDIS_TCP */
    char *path;             /* REDIS_UNIX; else NULL */
    char *user;             /* NULL when not given */
    char *password;         /* NULL when not given */
    int db;                 /* the server's database number */
    char *prefix;           /* never NULL for a redis address; NULL for mem: */
    int timeout_ms;         /* > 0 */
    bool first_read_cached; /* first_read=cache (redis_txn.c); default: server */
};

/*
 * Parses uri into *out (every string of it allocated, freed by
 * axstm__address_free).  Returns AXSTM_OK, AXSTM_EINVAL (NULL or malformed
 * uri, unknown scheme, bad option) or AXSTM_ENOMEM; on failure *out is
 * left empty (safe to free).
 */
int axstm__address_parse(const char *uri, struct axstm__address *out);

void axstm__address_free(struct axstm__address *a);

#endif
