/* SPDX-License-Identifier: MIT */
/*
 * address.c -- parsing a store's address (address.h).  Each part of the
 * address is cut out of the string by its delimiters first and checked
 * and decoded afterwards, so that a delimiter hidden in an escape (%2F,
 * %40, %26) never splits anything.
 */
#include "address.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "axstm.h"

/* A piece of the address: [p, p + n). */
struct span {
    const char *p;
    size_t n;
};

static struct span span_of(const char *from, const char *to)
{
    return (struct span){from, (size_t)(to - from)};
}

static const char *find(struct span s, char c)
{
    const char *hit = memchr(s.p, c, s.n);
    return hit != NULL ? hit : s.p + s.n;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A character that may stand unescaped in any part: printable ASCII but
 * for the delimiters that no part may contain. */
static bool plain(char c)
{
    return c > ' ' && c < 0x7f && c != '#' && c != '?' && c != '&';
}

/* Decodes s (with its %XX escapes) into a new string in *out.  An escape
 * that is cut short, not hex, or a NUL is invalid, as is any character
 * that is not plain. */
static int decode(struct span s, char **out)
{
    char *d = axstm__malloc(s.n + 1);
    if (d == NULL)
        return AXSTM_ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        if (c == '%') {
            int hi = i + 1 < s.n ? hex_value(s.p[i + 1]) : -1;
            int lo = i + 2 < s.n ? hex_value(s.p[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                axstm__free(d);
                return AXSTM_EINVAL;
            }
            d[n++] = (char)(hi << 4 | lo);
            i += 2;
        } else if (plain(c)) {
            d[n++] = c;
        } else {
            axstm__free(d);
            return AXSTM_EINVAL;
        }
    }
    d[n] = '\0';
    *out = d;
    return AXSTM_OK;
}

/* A plain decimal number from lo to hi (no sign, no spaces). */
static int number(struct span s, long lo, long hi, int *out)
{
    long v = 0;
    if (s.n == 0 || s.n > 10)
        return AXSTM_EINVAL;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return AXSTM_EINVAL;
        v = v * 10 + (s.p[i] - '0');
    }
    if (v < lo || v > hi)
        return AXSTM_EINVAL;
    *out = (int)v;
    return AXSTM_OK;
}

static bool host_char(char c, bool bracketed)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.')
        return true;
    return bracketed ? c == ':' || c == '%' : c == '-' || c == '_';
}

/* host[:port], host possibly "[v6 literal]". */
static int parse_host_port(struct span s, struct axstm__address *a)
{
    struct span host;
    const char *after;
    bool bracketed = s.n > 0 && s.p[0] == '[';
    if (bracketed) {
        const char *close = find(s, ']');
        if (close == s.p + s.n)
            return AXSTM_EINVAL;
        host = span_of(s.p + 1, close);
        after = close + 1;
    } else {
        after = find(s, ':');
        host = span_of(s.p, after);
    }
    if (host.n == 0)
        return AXSTM_EINVAL;
    for (size_t i = 0; i < host.n; i++)
        if (!host_char(host.p[i], bracketed))
            return AXSTM_EINVAL;
    const char *end = s.p + s.n;
    if (after != end) {
        if (*after != ':')
            return AXSTM_EINVAL;
        int rc = number(span_of(after + 1, end), 1, 65535, &a->port);
        if (rc != AXSTM_OK)
            return rc;
    }
    a->host = axstm__malloc(host.n + 1);
    if (a->host == NULL)
        return AXSTM_ENOMEM;
    memcpy(a->host, host.p, host.n);
    a->host[host.n] = '\0';
    return AXSTM_OK;
}

/* [user[:password]@] -- an empty user or password counts as not given. */
static int parse_userinfo(struct span s, struct axstm__address *a)
{
    const char *colon = find(s, ':');
    struct span user = span_of(s.p, colon);
    int rc = AXSTM_OK;
    if (user.n > 0)
        rc = decode(user, &a->user);
    if (rc == AXSTM_OK && colon < s.p + s.n && colon + 1 < s.p + s.n)
        rc = decode(span_of(colon + 1, s.p + s.n), &a->password);
    return rc;
}

/* redis://: everything between the scheme and the options. */
static int parse_tcp(struct span s, struct axstm__address *a)
{
    const char *slash = find(s, '/');
    struct span authority = span_of(s.p, slash);
    const char *at = find(authority, '@');
    int rc = AXSTM_OK;
    if (at < authority.p + authority.n) {
        struct span rest = span_of(at + 1, authority.p + authority.n);
        if (find(rest, '@') != rest.p + rest.n)
            return AXSTM_EINVAL; /* an '@' in a user or password is %40 */
        rc = parse_userinfo(span_of(authority.p, at), a);
        authority = rest;
    }
    if (rc == AXSTM_OK)
        rc = parse_host_port(authority, a);
    /* "/db", or nothing, or a lone "/". */
    const char *end = s.p + s.n;
    if (rc == AXSTM_OK && slash < end && slash + 1 < end)
        rc = number(span_of(slash + 1, end), 0, INT_MAX, &a->db);
    return rc;
}

/* redis+unix://: an empty authority, then an absolute path. */
static int parse_unix(struct span s, struct axstm__address *a)
{
    if (s.n < 2 || s.p[0] != '/')
        return AXSTM_EINVAL;
    return decode(s, &a->path);
}

static bool named(struct span s, const char *name)
{
    return s.n == strlen(name) && memcmp(s.p, name, s.n) == 0;
}

/* name=value&name=value... */
static int parse_options(struct span s, struct axstm__address *a)
{
    bool seen_timeout = false, seen_db = false, seen_first_read = false;
    const char *end = s.p + s.n;
    const char *p = s.p;
    for (;;) {
        struct span option = span_of(p, find(span_of(p, end), '&'));
        const char *eq = find(option, '=');
        if (eq == option.p + option.n)
            return AXSTM_EINVAL; /* empty, or no value */
        struct span name = span_of(option.p, eq);
        struct span value = span_of(eq + 1, option.p + option.n);
        int rc;
        if (named(name, "prefix") && a->prefix == NULL) {
            rc = value.n > 0 ? decode(value, &a->prefix) : AXSTM_EINVAL;
        } else if (named(name, "timeout_ms") && !seen_timeout) {
            seen_timeout = true;
            rc = number(value, 1, INT_MAX, &a->timeout_ms);
        } else if (named(name, "first_read") && !seen_first_read) {
            seen_first_read = true;
            a->first_read_cached = named(value, "cache");
            rc = a->first_read_cached || named(value, "server") ? AXSTM_OK : AXSTM_EINVAL;
        } else if (named(name, "db") && !seen_db && a->kind == AXSTM__ADDRESS_REDIS_UNIX) {
            seen_db = true;
            rc = number(value, 0, INT_MAX, &a->db);
        } else if (named(name, "user") && a->user == NULL && a->kind == AXSTM__ADDRESS_REDIS_UNIX) {
            rc = value.n > 0 ? decode(value, &a->user) : AXSTM_EINVAL;
        } else if (named(name, "password") && a->password == NULL &&
                   a->kind == AXSTM__ADDRESS_REDIS_UNIX) {
            rc = value.n > 0 ? decode(value, &a->password) : AXSTM_EINVAL;
        } else {
            rc = AXSTM_EINVAL; /* unknown, repeated, or db given twice */
        }
        if (rc != AXSTM_OK)
            return rc;
        if (option.p + option.n == end)
            return AXSTM_OK;
        p = option.p + option.n + 1;
    }
}

/* The rest of uri after scheme (compared without regard to case), or NULL. */
static const char *after_scheme(const char *uri, const char *scheme)
{
    size_t n = strlen(scheme);
    return strncasecmp(uri, scheme, n) == 0 ? uri + n : NULL;
}

int axstm__address_parse(const char *uri, struct axstm__address *out)
{
    *out = (struct axstm__address){.kind = AXSTM__ADDRESS_MEM,
                                   .timeout_ms = AXSTM__DEFAULT_TIMEOUT_MS};
    if (uri == NULL)
        return AXSTM_EINVAL;
    if (strcasecmp(uri, "mem:") == 0)
        return AXSTM_OK;
    const char *rest;
    if ((rest = after_scheme(uri, "redis://")) != NULL)
        out->kind = AXSTM__ADDRESS_REDIS_TCP;
    else if ((rest = after_scheme(uri, "redis+unix://")) != NULL)
        out->kind = AXSTM__ADDRESS_REDIS_UNIX;
    else
        return AXSTM_EINVAL;
    out->port = AXSTM__REDIS_DEFAULT_PORT;

    struct span all = span_of(rest, rest + strlen(rest));
    const char *query = find(all, '?');
    struct span main_part = span_of(rest, query);
    int rc = out->kind == AXSTM__ADDRESS_REDIS_TCP ? parse_tcp(main_part, out)
                                                   : parse_unix(main_part, out);
    if (rc == AXSTM_OK && query < all.p + all.n)
        rc = parse_options(span_of(query + 1, all.p + all.n), out);
    if (rc == AXSTM_OK && out->prefix == NULL) {
        struct span fallback = {AXSTM__DEFAULT_PREFIX, sizeof AXSTM__DEFAULT_PREFIX - 1};
        rc = decode(fallback, &out->prefix);
    }
    if (rc != AXSTM_OK)
        axstm__address_free(out);
    return rc;
}

void axstm__address_free(struct axstm__address *a)
{
    axstm__free(a->host);
    axstm__free(a->path);
    axstm__free(a->user);
    axstm__free(a->password);
    axstm__free(a->prefix);
    a->host = a->path = a->user = a->password = a->prefix = NULL;
}
