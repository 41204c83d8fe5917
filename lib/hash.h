/*
 * hash.h -- keyed hashing of keys (multiply-and-fold, see hash.c).
 *
 * Each store draws its own random 128-bit key, so nobody can choose key
 * names that land in one bucket (hash flooding) without knowing it.
 */
#ifndef AXSTM_HASH_H
#define AXSTM_HASH_H

#include <stddef.h>
#include <stdint.h>

struct axstm__hash_key {
    uint64_t k0, k1;
};

/* Fills *key from the system's random source (getrandom, /dev/urandom, or
 * as a last resort the clock and addresses mixed together). Never fails. */
void axstm__hash_seed(struct axstm__hash_key *key);

uint64_t axstm__hash(const struct axstm__hash_key *key, const void *data, size_t len);

#endif
