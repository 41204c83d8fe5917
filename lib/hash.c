/*
 * hash.c -- SipHash-1-3, written from the description by Aumasson and
 * Bernstein.  One compression round per block and three finalisation rounds:
 * the variant chosen by Python and Rust for hash tables, strong enough
 * against flooding and about twice as fast as SipHash-2-4.
 */
#include "axstm-internal.h"

#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

/* One little-endian word: a single load on little-endian machines. */
static inline uint64_t load_le64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

#define SIPROUND(v0, v1, v2, v3)                                               \
    do {                                                                       \
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);              \
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                                 \
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                                 \
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);              \
    } while (0)

uint64_t axstm__hash(const struct axstm__hash_key *key, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t v0 = key->k0 ^ UINT64_C(0x736f6d6570736575);
    uint64_t v1 = key->k1 ^ UINT64_C(0x646f72616e646f6d);
    uint64_t v2 = key->k0 ^ UINT64_C(0x6c7967656e657261);
    uint64_t v3 = key->k1 ^ UINT64_C(0x7465646279746573);
    size_t blocks = len / 8;

    for (size_t i = 0; i < blocks; i++, p += 8) {
        uint64_t m = load_le64(p);
        v3 ^= m;
        SIPROUND(v0, v1, v2, v3);
        v0 ^= m;
    }

    /* Last block: the remaining bytes, with the length in the top byte. */
    unsigned char tail[8] = {0};
    memcpy(tail, p, len & 7);
    uint64_t last = load_le64(tail) | (uint64_t)len << 56;
    v3 ^= last;
    SIPROUND(v0, v1, v2, v3);
    v0 ^= last;

    v2 ^= 0xff;
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

static int read_urandom(void *buf, size_t len)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, buf, len);
    close(fd);
    return got == (ssize_t)len ? 0 : -1;
}

void axstm__hash_seed(struct axstm__hash_key *key)
{
    uint64_t k[2];
    if (getrandom(k, sizeof k, GRND_NONBLOCK) != (ssize_t)sizeof k &&
        read_urandom(k, sizeof k) != 0) {
        /* No entropy source at all: still differ per store and per run. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        k[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)key;
        k[1] = (uint64_t)(uintptr_t)&ts ^ ((uint64_t)getpid() << 17);
        struct axstm__hash_key mix = {UINT64_C(0x9e3779b97f4a7c15), k[1]};
        k[1] = axstm__hash(&mix, k, sizeof k);
    }
    key->k0 = k[0];
    key->k1 = k[1];
}
