/* SPDX-License-Identifier: MIT */
/*
 * hash.c -- the per-store random key of the key hash (hash.h holds the
 * hash itself, inline: every lookup runs it).
 */
#include "hash.h"

#include "thread.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

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
    int cancel_state = axstm__cancel_off();
    bool drawn = getrandom(k, sizeof k, GRND_NONBLOCK) == (ssize_t)sizeof k ||
                 read_urandom(k, sizeof k) == 0;
    axstm__cancel_restore(cancel_state);
    if (!drawn) {
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
