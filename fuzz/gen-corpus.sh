#!/usr/bin/env bash
# gen-corpus.sh -- writes the seed corpus of fuzz_api into fuzz/corpus/.
#
# Each seed is a small program in fuzz_api.c's encoding, written here as
# hex bytes, one operation per line, so that a reader can follow it.
# The fuzzer starts from these instead of from nothing, so CI's 60-second
# run reaches transactions, watches and failure injection at once.
# Run it from anywhere; it rewrites every seed it knows.
set -euo pipefail

out="$(cd "$(dirname "$0")" && pwd)/corpus"
mkdir -p "$out"

# seed NAME HEX...: writes the bytes (two hex digits each) to corpus/NAME.
seed() {
    local name=$1 bytes="" h
    shift
    for h in $*; do
        bytes+="\\x$h"
    done
    printf "$bytes" >"$out/$name"
}

# Operations: 00 usevar, 01 using, 02 set, 04 commit, 05 refresh, 06 free,
# 07 get, 08 collection, 09 foreach, 0a atomically, 0b try_atomically,
# 0c atomically_timed, 0d watch, 0e bulk using, 0f misc, 10 delete (a
# handle's value_delete; then a byte: & 3 non-zero commits it at once).  An
# op byte with both top bits set (c0 | op) is followed by an
# allocation-failure byte.  In transaction bodies: 00 get, 01 get_i64,
# 02 set, 04 or_else, 08 txn_delete (then a key).
# Keys: 00-07 short names (00 "a", 01 "b", 04 "acct.1", 05 "acct.2"),
# 08 the longest key, x9 generated "g<x>", 0a "", 0b too long, 0c NULL.

# Axon's greeting: two holders of "a"; the stale one is refused, then
# refreshed and committed.
seed greeting \
    00 00 00 \
    02 00 00 03 0b 48 65 6c 6c 6f 20 57 6f 72 6c 64 \
    04 00 00 \
    00 01 00 \
    02 01 00 01 03 57 6f 6f \
    04 01 00 \
    02 00 00 01 03 57 6f 6f \
    04 00 00 \
    05 00 00 \
    04 00 00 \
    07 00 00 01

# Three accounts in one collection, moved into one, committed twice.
seed accounts \
    01 00 03 04 05 03 \
    02 00 01 00 00 00 00 00 00 00 00 32 \
    02 00 03 00 00 00 00 00 00 00 00 64 \
    04 00 01 \
    01 01 03 04 05 03 \
    02 01 01 00 00 00 00 00 00 00 00 00 \
    02 01 03 00 00 00 00 00 00 00 00 00 \
    02 01 05 00 00 00 00 00 00 00 00 96 \
    04 01 01 \
    07 01 05 00

# Overlapping collections: E commits unchanged, D is refused whole.
seed overlap \
    01 00 03 04 05 03 \
    04 00 01 \
    01 01 03 04 05 03 \
    01 02 02 04 03 \
    04 02 01 \
    04 01 01 \
    05 01 01 \
    04 01 01

# A transaction writing, reading its own write, and reading a missing key.
seed txn-basic \
    0a 03 \
       02 00 00 00 00 00 00 00 00 00 07 \
       00 00 00 \
       01 01 \
    00

# or_else: the first branch writes and retries (dropped), the second reads.
seed txn-or-else \
    0a 02 \
       02 01 01 03 61 62 63 \
       04 \
          01 02 02 01 0c 00 01 02 03 04 05 06 07 08 09 0a 0b 04 \
          01 00 02 00 00 \
    00

# A body rolled back with its own positive code, then a read-only one.
seed txn-rollback \
    0a 01 02 00 01 05 68 65 6c 6c 6f 06 07 \
    0a 01 00 00 00 00

# try_atomically that retries: a watch over what it read, fired by a
# commit, then re-armed.
seed try-retry \
    0b 01 00 00 00 04 \
    00 00 00 \
    02 00 00 00 00 00 00 00 00 00 00 01 \
    04 00 00 \
    0d 01 00 \
    0b 00 04

# Timed transactions: timeout 0, 1 us and a negative one.
seed timed \
    0c 00 01 00 00 05 \
    0c 01 01 01 00 05 \
    0c 02 00 00

# A watch on two keys, fired by a collection commit, re-armed and freed.
seed watch \
    0d 00 00 02 00 01 \
    01 00 02 01 02 \
    04 00 01 \
    0d 01 00 \
    0d 03 00 \
    0d 02 00 \
    0d 00 01 00

# Many generated keys: grows table shards; step 0 repeats one key.
seed bulk \
    0e 00 2f 00 01 \
    0e 01 2f 80 03 \
    0e 02 10 07 00 \
    04 00 02 \
    08 00 09 \
    09 0f 05 00

# foreach stopped early with a code, and one that checks keys out inside.
seed foreach \
    01 00 04 00 01 02 03 \
    09 01 05 01 \
    09 0f 00 01

# Bad keys: "", too long, NULL, the longest valid key, duplicates.
seed keys \
    00 00 0a \
    00 00 0b \
    00 00 0c \
    00 00 08 \
    01 01 04 00 00 01 00 \
    01 02 02 08 0b \
    01 03 05 \
    04 03 00

# Allocation failures armed before usevar, using, set, a transaction and a
# watch (some sticky: c0 | 0x20).
seed enomem \
    c0 00 00 00 \
    c1 01 01 02 00 01 \
    c0 21 02 01 \
    00 00 00 \
    c2 00 00 00 02 0c 00 01 02 03 04 05 06 07 08 09 0a 0b \
    ca 02 01 02 01 01 0c 00 01 02 03 04 05 06 07 08 09 0a 0b 00 \
    cd 00 00 00 02 06 07 \
    ce 20 03 2f 40 01

# Getters: a string, a number, wrong sizes, no value, collection lookups.
seed getters \
    01 00 03 00 01 02 \
    02 00 01 01 05 68 65 6c 6c 6f \
    07 00 01 01 \
    07 00 01 00 \
    02 00 03 00 00 00 00 00 00 00 00 2a \
    07 00 03 00 \
    07 00 05 02 \
    07 00 05 03 \
    08 00 01 \
    08 00 0a

# Misc: refused arguments, a store made under failure, churn of blobs.
seed misc \
    0f 00 \
    0f 01 \
    0f 83 \
    0f 02 00 4f 11 \
    00 00 00 \
    0f 02 00 4f 22

# Reads and writes past the transaction's inline arrays (more than 16
# written keys: the commit allocates).
seed txn-many \
    0a 03 \
       06 27 00 00 \
       07 27 03 05 \
       06 27 00 00 \
    00

# Borrowed values: committed or refreshed alone (refused), freed (no-op).
seed borrowed \
    01 00 02 00 01 \
    06 00 01 \
    04 00 00 \
    05 00 00 \
    02 00 01 04 \
    04 00 01 \
    06 00 00

# Setting a value from its own bytes (whole, and the tail).
seed self-set \
    00 00 00 \
    02 00 00 03 10 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f \
    02 00 00 08 \
    02 00 00 09 \
    04 00 00 \
    02 00 00 09 \
    02 00 00 04 \
    07 00 00 02

# Deleting through a value handle: the deleted key is gone from foreach,
# a handle checked out before the delete is refused, also after the key is
# created again (at version 0, by usevar), and so is the deleting handle;
# a refresh brings the key back.
seed delete-value \
    00 00 00 \
    02 00 00 00 00 00 00 00 00 00 00 05 \
    04 00 00 \
    00 01 00 \
    10 00 00 00 \
    07 00 00 00 \
    04 00 00 \
    04 01 00 \
    09 0f 00 00 \
    00 02 00 \
    02 01 00 00 00 00 00 00 00 00 00 06 \
    04 01 00 \
    02 02 00 00 00 00 00 00 00 00 00 07 \
    04 02 00 \
    04 00 00 \
    05 00 00 \
    10 00 00 01 \
    05 01 00 \
    07 01 00 03

# Deleting a value of a collection, committed with the others; a collection
# checked out before refused until refreshed; a bulk collection losing one.
seed delete-collection \
    01 00 03 00 01 02 \
    02 00 01 00 00 00 00 00 00 00 00 01 \
    02 00 03 00 00 00 00 00 00 00 00 02 \
    04 00 01 \
    01 03 02 01 02 \
    10 00 03 01 \
    09 0f 00 01 \
    01 01 02 01 02 \
    04 03 01 \
    04 00 01 \
    05 00 01 \
    04 00 01 \
    0e 02 10 00 01 \
    10 02 01 01 \
    09 0f 00 00

# axstm_txn_delete: of a key that exists (a later read: no value), of one
# the body wrote, of one that does not exist; rolled back (nothing
# happens); of a missing key read first, and of a watched one.
seed txn-delete \
    00 00 00 \
    02 00 00 00 00 00 00 00 00 00 00 08 \
    04 00 00 \
    0a 05 \
       08 00 \
       01 00 \
       02 01 00 00 00 00 00 00 00 00 09 \
       08 01 \
       08 02 \
    00 \
    04 00 00 \
    0a 02 00 03 00 08 03 06 05 \
    0a 02 00 03 00 08 03 00 \
    0d 00 00 01 04 \
    0a 01 08 04 00 \
    0d 01 00 \
    09 0f 00 00

# or_else: the first branch deletes and retries (its delete is dropped),
# the second reads the value and deletes it.
seed txn-delete-or-else \
    00 00 00 \
    02 00 00 00 00 00 00 00 00 00 00 0a \
    04 00 00 \
    0a 01 04 \
       01 08 00 04 \
       02 01 00 08 00 00 \
    00 \
    04 00 00

# A try_atomically waiting on a missing key (no key is made): a transaction
# creates it (the watch fires), a handle deletes it (fires again).
seed try-delete-watch \
    0b 01 00 02 00 04 \
    09 0f 00 00 \
    0a 01 02 02 00 00 00 00 00 00 00 00 0b 00 \
    0d 01 00 \
    00 00 02 \
    10 00 00 01 \
    0d 03 00 \
    09 0f 00 00

# Allocation failures while a deleted key is brought back by a refresh,
# and in a transaction deleting.
seed delete-enomem \
    00 00 00 \
    04 00 00 \
    00 01 00 \
    10 00 00 01 \
    c5 00 01 00 \
    c5 20 01 00 \
    05 01 00 \
    ca 00 02 08 00 08 00 00 \
    ca 21 03 02 05 00 00 00 00 00 00 00 00 0c 08 05 01 05 00
