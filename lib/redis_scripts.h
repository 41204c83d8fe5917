/* SPDX-License-Identifier: MIT */
/*
 * redis_scripts.h -- the server side of a store kept in Redis: one Lua
 * script per kind of call, each run atomically by the server, so that a
 * checkout is one consistent snapshot and a commit is all or nothing.
 *
 * What the server holds, under the store's prefix P:
 *   P k:NAME   a hash per key: v (version, a decimal string bumped with
 *              HINCRBY so that it stays exact past 2^53), i (incarnation:
 *              a new number each time the key is created, so that a handle
 *              of a deleted key never commits over its successor), d (the
 *              value's bytes; absent when the key has no value);
 *   P births   the last incarnation handed out;
 *   P clock    the number of commits: each commit's stamp;
 *   P keys     the set of every key's name (foreach, stats);
 *   P stats    a hash: commits, conflicts, bytes (of values held).
 * Anything else under a name the scripts use (a string where a hash
 * should be, a hash without v or i) is foreign data: the script stops
 * before its first write with an error starting "AXSTM_FOREIGN".
 *
 * Every script takes KEYS = P births, P clock, P keys, P stats, then the
 * keys' hashes; ARGV starts with one word of options, then per key what
 * the script needs (the name first).
 */
#ifndef AXSTM_REDIS_SCRIPTS_H
#define AXSTM_REDIS_SCRIPTS_H

/* clang-format off: each line of Lua stays a line of its own. */

/* The checks every script starts with: which keys exist, and none is
 * foreign.  Returns a table of booleans, or raises the error. */
#define AXSTM__LUA_CHECK_KEYS                                                \
    "local function state_of(k)\n"                                           \
    "  local t = redis.call('TYPE', k)['ok']\n"                              \
    "  if t == 'none' then return false end\n"                               \
    "  if t ~= 'hash' or redis.call('HEXISTS', k, 'v') == 0\n"               \
    "     or redis.call('HEXISTS', k, 'i') == 0 then\n"                      \
    "    return redis.error_reply('AXSTM_FOREIGN ' .. k)\n"                  \
    "  end\n"                                                                \
    "  return true\n"                                                        \
    "end\n"                                                                  \
    "local exists = {}\n"                                                    \
    "for j = 5, #KEYS do\n"                                                  \
    "  local s = state_of(KEYS[j])\n"                                        \
    "  if type(s) == 'table' then return s end\n"                            \
    "  exists[j] = s\n"                                                      \
    "end\n"                                                                  \
    "for j = 1, 4 do\n"                                                      \
    "  local t = redis.call('TYPE', KEYS[j])['ok']\n"                        \
    "  local want = (j == 3 and 'set') or (j == 4 and 'hash') or 'string'\n" \
    "  if t ~= 'none' and t ~= want then\n"                                  \
    "    return redis.error_reply('AXSTM_FOREIGN ' .. KEYS[j])\n"            \
    "  end\n"                                                                \
    "end\n"

/*
 * Checkout: ARGV[1] "1" creates missing keys (version 0, no value, a new
 * incarnation), "0" reports them as absent; ARGV[1 + n] is key n's name.
 * Returns per key {version, incarnation, data or nil}, or {} for an absent
 * key that was not created.
 */
#define AXSTM__LUA_CHECKOUT                                 \
    AXSTM__LUA_CHECK_KEYS                                   \
    "local create = ARGV[1] == '1'\n"                       \
    "local out = {}\n"                                      \
    "for j = 5, #KEYS do\n"                                 \
    "  local k = KEYS[j]\n"                                 \
    "  if not exists[j] and create then\n"                  \
    "    local born = redis.call('INCR', KEYS[1])\n"        \
    "    redis.call('HSET', k, 'v', '0', 'i', born)\n"      \
    "    redis.call('SADD', KEYS[3], ARGV[j - 3])\n"        \
    "    exists[j] = true\n"                                \
    "  end\n"                                               \
    "  if exists[j] then\n"                                 \
    "    local f = redis.call('HMGET', k, 'v', 'i', 'd')\n" \
    "    out[#out + 1] = {f[1], f[2], f[3]}\n"              \
    "  else\n"                                              \
    "    out[#out + 1] = {}\n"                              \
    "  end\n"                                               \
    "end\n"                                                 \
    "return out\n"

/*
 * Commit of handles (Axon's rule): ARGV[1] is unused ("-"); then per key
 * four words: name, the version and incarnation checked out, and what to
 * do ("s" set, "n" no value, "d" delete), and for "s" a fifth, the bytes.
 * Rejected, with nothing written but the conflict counted, when a key is
 * gone, was created again, or has a greater version: returns {0}.  Else
 * every key is written, its version bumped, the clock advanced once, and
 * each key's name published on the change channel (ARGV's last word):
 * returns {1, stamp, version 1, incarnation 1, version 2, ...}.
 */
#define AXSTM__LUA_COMMIT                                                                   \
    AXSTM__LUA_CHECK_KEYS                                                                   \
    "local function greater(a, b)\n"                                                        \
    "  if #a ~= #b then return #a > #b end\n"                                               \
    "  return a > b\n"                                                                      \
    "end\n"                                                                                 \
    "local ops = {}\n"                                                                      \
    "local a = 2\n"                                                                         \
    "for j = 5, #KEYS do\n"                                                                 \
    "  local op = {name = ARGV[a], v = ARGV[a + 1], i = ARGV[a + 2], what = ARGV[a + 3]}\n" \
    "  a = a + 4\n"                                                                         \
    "  if op.what == 's' then op.d = ARGV[a]; a = a + 1 end\n"                              \
    "  ops[j] = op\n"                                                                       \
    "  local ok = exists[j]\n"                                                              \
    "  if ok then\n"                                                                        \
    "    local f = redis.call('HMGET', KEYS[j], 'v', 'i')\n"                                \
    "    ok = f[2] == op.i and not greater(f[1], op.v)\n"                                   \
    "  end\n"                                                                               \
    "  if not ok then\n"                                                                    \
    "    redis.call('HINCRBY', KEYS[4], 'conflicts', 1)\n"                                  \
    "    return {0}\n"                                                                      \
    "  end\n"                                                                               \
    "end\n"                                                                                 \
    "local channel = ARGV[a]\n"                                                             \
    "local stamp = redis.call('INCR', KEYS[2])\n"                                           \
    "local out = {1, stamp}\n"                                                              \
    "local bytes = 0\n"                                                                     \
    "for j = 5, #KEYS do\n"                                                                 \
    "  local k, op = KEYS[j], ops[j]\n"                                                     \
    "  bytes = bytes - redis.call('HSTRLEN', k, 'd')\n"                                     \
    "  local v = redis.call('HINCRBY', k, 'v', 1)\n"                                        \
    "  local i = redis.call('HGET', k, 'i')\n"                                              \
    "  if op.what == 'd' then\n"                                                            \
    "    redis.call('DEL', k)\n"                                                            \
    "    redis.call('SREM', KEYS[3], op.name)\n"                                            \
    "  elseif op.what == 's' then\n"                                                        \
    "    redis.call('HSET', k, 'd', op.d)\n"                                                \
    "    bytes = bytes + #op.d\n"                                                           \
    "  else\n"                                                                              \
    "    redis.call('HDEL', k, 'd')\n"                                                      \
    "  end\n"                                                                               \
    "  out[#out + 1] = v\n"                                                                 \
    "  out[#out + 1] = i\n"                                                                 \
    "  redis.call('PUBLISH', channel, op.name)\n"                                           \
    "end\n"                                                                                 \
    "redis.call('HINCRBY', KEYS[4], 'commits', 1)\n"                                        \
    "if bytes ~= 0 then redis.call('HINCRBY', KEYS[4], 'bytes', bytes) end\n"               \
    "return out\n"

/* Stats: returns {keys, commits, conflicts, bytes}. */
#define AXSTM__LUA_STATS                                                                \
    AXSTM__LUA_CHECK_KEYS                                                               \
    "local f = redis.call('HMGET', KEYS[4], 'commits', 'conflicts', 'bytes')\n"         \
    "return {redis.call('SCARD', KEYS[3]), tonumber(f[1] or 0), tonumber(f[2] or 0),\n" \
    "        tonumber(f[3] or 0)}\n"

/* clang-format on */

#endif
