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
 *   P keys     the set of every key's name (foreach, stats);
 *   P stats    a hash: commits (each commit's stamp is their count),
 *              conflicts, bytes (of values held);
 *   P hold     priority holds (HOLD): per key name, the token of the
 *              transaction run holding it and until when (ms);
 *   P done     the commit record: per connection that has committed, the
 *              sequence number and answer of its last commit, or "fenced"
 *              once a client gave up on an answer it lost (see RESOLVE).
 * Anything else under a name the scripts use (a string where a hash
 * should be, a hash without v or i) is foreign data: the script stops
 * before its first write with an error starting "AXSTM_FOREIGN" (or the
 * server's WRONGTYPE).  Each script is laid out so that the first command
 * that could meet foreign data comes before its first write, or is its
 * first write: a key's hash is read (HMGET) before anything, the meta
 * names are read or written first, and births and keys, which only
 * creating and deleting write, have their types checked first when a
 * script will write them.
 *
 * The server runs every command of a script, so a script is as short as
 * it can be: per key a checkout runs 2 commands, a commit 4 (read, value
 * size, version, value), and a commit publishes one message for all its
 * keys.
 *
 * Every script takes KEYS = P births, P keys, P stats, P done, P hold,
 * then the keys' hashes; ARGV starts with the script's own words, then
 * per key what the script needs.  The two commit scripts start ARGV with
 * the connection's name and the commit's sequence number on it: a commit
 * records its answer under that name before it returns, so that a client
 * whose connection was lost with the answer can learn what happened.
 */
#ifndef AXSTM_REDIS_SCRIPTS_H
#define AXSTM_REDIS_SCRIPTS_H

/* clang-format off: each line of Lua stays a line of its own. */

/* What every script over keys starts with: each key's hash read once
 * (state[j] = {version, incarnation} or false when it does not exist),
 * foreign data refused before anything is written, and meta_ok(j), the
 * check of a meta name's type that creating or deleting needs first. */
#define AXSTM__LUA_CHECK_KEYS                                                 \
    "local function foreign(k)\n"                                             \
    "  return redis.error_reply('AXSTM_FOREIGN ' .. k)\n"                     \
    "end\n"                                                                   \
    "local state = {}\n"                                                      \
    "for j = 6, #KEYS do\n"                                                   \
    "  local f = redis.pcall('HMGET', KEYS[j], 'v', 'i')\n"                   \
    "  if f.err then return foreign(KEYS[j]) end\n"                           \
    "  if f[1] and f[2] then\n"                                               \
    "    state[j] = f\n"                                                      \
    "  elseif f[1] or f[2] or redis.call('EXISTS', KEYS[j]) == 1 then\n"      \
    "    return foreign(KEYS[j])\n"                                           \
    "  else\n"                                                                \
    "    state[j] = false\n"                                                  \
    "  end\n"                                                                 \
    "end\n"                                                                   \
    "local function meta_ok(j)\n"                                             \
    "  local t = redis.call('TYPE', KEYS[j])['ok']\n"                         \
    "  return t == 'none' or t == (j == 1 and 'string' or j == 2 and 'set'\n" \
    "                              or 'hash')\n"                              \
    "end\n"

/* A key is born: a new incarnation, version 0, no value. */
#define AXSTM__LUA_BIRTH                                   \
    "local function birth(j, name)\n"                      \
    "  local born = redis.call('INCR', KEYS[1])\n"         \
    "  redis.call('HSET', KEYS[j], 'v', '0', 'i', born)\n" \
    "  redis.call('SADD', KEYS[2], name)\n"                \
    "  state[j] = {'0', tostring(born)}\n"                 \
    "end\n"

/*
 * Checkout: ARGV[1] "1" creates missing keys (version 0, no value, a new
 * incarnation), "0" reports them as absent; ARGV[1 + n] is key n's name.
 * Returns per key {version, incarnation, data or nil}, or {} for an absent
 * key that was not created.
 */
#define AXSTM__LUA_CHECKOUT                                                              \
    AXSTM__LUA_CHECK_KEYS                                                                \
    AXSTM__LUA_BIRTH                                                                     \
    "local create = ARGV[1] == '1'\n"                                                    \
    "if create then\n"                                                                   \
    "  for j = 6, #KEYS do\n"                                                            \
    "    if not state[j] and not (meta_ok(1) and meta_ok(2)) then\n"                     \
    "      return foreign(KEYS[1] .. ' or ' .. KEYS[2])\n"                               \
    "    end\n"                                                                          \
    "  end\n"                                                                            \
    "end\n"                                                                              \
    "local out = {}\n"                                                                   \
    "for j = 6, #KEYS do\n"                                                              \
    "  if not state[j] and create then birth(j, ARGV[j - 4]) end\n"                      \
    "  if state[j] then\n"                                                               \
    "    out[#out + 1] = {state[j][1], state[j][2], redis.call('HGET', KEYS[j], 'd')}\n" \
    "  else\n"                                                                           \
    "    out[#out + 1] = {}\n"                                                           \
    "  end\n"                                                                            \
    "end\n"                                                                              \
    "return out\n"

/*
 * What both commit scripts share.  fenced(): the client gave this
 * connection up (RESOLVE), so a commit still arriving on it must not run.
 * record(answer): keeps the answer as this connection's last commit.
 * greater(a, b): a > b for versions as decimal strings.  reads_valid(
 * first, n, a): the n keys from KEYS[first] were read at the version and
 * incarnation in ARGV[a], ARGV[a + 1], ... ("-" for a key read as absent)
 * and are still so.  begin_writes(creates): counts the commit and checks
 * what creating or deleting keys writes, before the first write to a key;
 * returns the commit's stamp, or an error reply.  write_key(j, name,
 * what, data): writes KEYS[j] ("s" set, "n" no value, "d" delete; a
 * missing key is created first, deleting one is nothing) and answers its
 * new version and incarnation.  finish(stamp): publishes the names
 * written (one message: the connection's name, then each name, separated
 * by NUL bytes) and counts the bytes.
 */
#define AXSTM__LUA_COMMIT_COMMON                                                \
    AXSTM__LUA_BIRTH                                                            \
    "local function fenced()\n"                                                 \
    "  return redis.call('HGET', KEYS[4], ARGV[1]) == 'fenced'\n"               \
    "end\n"                                                                     \
    "local function record(answer)\n"                                           \
    "  redis.call('HSET', KEYS[4], ARGV[1], ARGV[2] .. ' ' .. answer)\n"        \
    "  return answer\n"                                                         \
    "end\n"                                                                     \
    "local function greater(a, b)\n"                                            \
    "  if #a ~= #b then return #a > #b end\n"                                   \
    "  return a > b\n"                                                          \
    "end\n"                                                                     \
    "local function reads_valid(first, n, a)\n"                                 \
    "  for j = first, first + n - 1 do\n"                                       \
    "    local v, i = ARGV[a], ARGV[a + 1]\n"                                   \
    "    a = a + 2\n"                                                           \
    "    if i == '-' then\n"                                                    \
    "      if state[j] then return false end\n"                                 \
    "    elseif not state[j] or state[j][1] ~= v or state[j][2] ~= i then\n"    \
    "      return false\n"                                                      \
    "    end\n"                                                                 \
    "  end\n"                                                                   \
    "  return true\n"                                                           \
    "end\n"                                                                     \
    "local function begin_writes(creates)\n"                                    \
    "  if creates and not (meta_ok(1) and meta_ok(2)) then\n"                   \
    "    return foreign(KEYS[1] .. ' or ' .. KEYS[2])\n"                        \
    "  end\n"                                                                   \
    "  return redis.call('HINCRBY', KEYS[3], 'commits', 1)\n"                   \
    "end\n"                                                                     \
    "local bytes, written = 0, {ARGV[1]}\n"                                     \
    "local function write_key(j, name, what, data)\n"                           \
    "  local k = KEYS[j]\n"                                                     \
    "  if what == 'd' and not state[j] then return nil end\n"                   \
    "  if not state[j] then birth(j, name) end\n"                               \
    "  bytes = bytes - redis.call('HSTRLEN', k, 'd')\n"                         \
    "  local f = {redis.call('HINCRBY', k, 'v', 1), state[j][2]}\n"             \
    "  if what == 'd' then\n"                                                   \
    "    redis.call('DEL', k)\n"                                                \
    "    redis.call('SREM', KEYS[2], name)\n"                                   \
    "    state[j] = false\n"                                                    \
    "  elseif what == 's' then\n"                                               \
    "    redis.call('HSET', k, 'd', data)\n"                                    \
    "    bytes = bytes + #data\n"                                               \
    "  else\n"                                                                  \
    "    redis.call('HDEL', k, 'd')\n"                                          \
    "  end\n"                                                                   \
    "  written[#written + 1] = name\n"                                          \
    "  return f\n"                                                              \
    "end\n"                                                                     \
    "local function finish()\n"                                                 \
    "  if #written > 1 then\n"                                                  \
    "    redis.call('PUBLISH', ARGV[#ARGV], table.concat(written, '\\0'))\n"    \
    "  end\n"                                                                   \
    "  if bytes ~= 0 then redis.call('HINCRBY', KEYS[3], 'bytes', bytes) end\n" \
    "end\n"                                                                     \
    "local function conflict()\n"                                               \
    "  redis.call('HINCRBY', KEYS[3], 'conflicts', 1)\n"                        \
    "  return '0'\n"                                                            \
    "end\n"

/* held(name, token): another run than token's holds the key (HOLD). */
#define AXSTM__LUA_HELD                                                         \
    "local any_held = redis.call('HLEN', KEYS[5]) > 0\n"                        \
    "local function held(name, token)\n"                                        \
    "  if not any_held then return false end\n"                                 \
    "  local h = redis.call('HGET', KEYS[5], name)\n"                           \
    "  if not h then return false end\n"                                        \
    "  local owner, until_ms = string.match(h, '^(%S+) (%d+)')\n"               \
    "  if not owner or owner == token then return false end\n"                  \
    "  local t = redis.call('TIME')\n"                                          \
    "  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n" \
    "  return tonumber(until_ms) > now\n"                                       \
    "end\n"

/*
 * Commit of handles (Axon's rule): ARGV[1], ARGV[2] name the commit (see
 * above); then per key four words: name, the version and incarnation
 * checked out, and what to do ("s" set, "n" no value, "d" delete), and
 * for "s" a fifth, the bytes; the last word is the change channel.
 * Rejected, with nothing written but the conflict counted, when a key is
 * gone, was created again, or has a greater version: answers "0".  Else
 * every key is written, its version bumped, and the names published:
 * answers "1,stamp,version1,incarnation1,version2,...".  A key held by a
 * transaction that keeps losing (HOLD) answers "busy", nothing written; a
 * fenced connection's commit "fenced".
 */
#define AXSTM__LUA_COMMIT                                                                   \
    AXSTM__LUA_CHECK_KEYS                                                                   \
    AXSTM__LUA_COMMIT_COMMON                                                                \
    AXSTM__LUA_HELD                                                                         \
    "if fenced() then return 'fenced' end\n"                                                \
    "local ops, deletes = {}, false\n"                                                      \
    "local a = 3\n"                                                                         \
    "for j = 6, #KEYS do\n"                                                                 \
    "  local op = {name = ARGV[a], v = ARGV[a + 1], i = ARGV[a + 2], what = ARGV[a + 3]}\n" \
    "  a = a + 4\n"                                                                         \
    "  if op.what == 's' then op.d = ARGV[a]; a = a + 1 end\n"                              \
    "  ops[j] = op\n"                                                                       \
    "  deletes = deletes or op.what == 'd'\n"                                               \
    "  local f = state[j]\n"                                                                \
    "  if not f or f[2] ~= op.i or greater(f[1], op.v) then return conflict() end\n"        \
    "  if held(op.name, nil) then return 'busy' end\n"                                      \
    "end\n"                                                                                 \
    "local stamp = begin_writes(deletes)\n"                                                 \
    "if type(stamp) == 'table' then return stamp end\n"                                     \
    "local out = {}\n"                                                                      \
    "for j = 6, #KEYS do\n"                                                                 \
    "  local op = ops[j]\n"                                                                 \
    "  local f = write_key(j, op.name, op.what, op.d)\n"                                    \
    "  out[#out + 1] = f[1]\n"                                                              \
    "  out[#out + 1] = f[2]\n"                                                              \
    "end\n"                                                                                 \
    "finish()\n"                                                                            \
    "return record('1,' .. stamp .. (#out > 0 and ',' .. table.concat(out, ',') or ''))\n"

/*
 * A transaction's read: ARGV[1] is the number n of keys read so far, at
 * KEYS[6..5 + n], with their version and incarnation in ARGV[2..]; KEYS
 * may end with one more key to read.  Answers {0, changed...} when a key
 * read so far has changed (the transaction must run again), where each
 * changed key is {its place among the reads (from 1), version,
 * incarnation, data or nil}, or {place} when it is absent now; else {1}
 * and, for the key to read, {version, incarnation, data or nil} or {}
 * when it is absent.  Creates nothing: a transaction that does not commit
 * leaves no key.
 */
#define AXSTM__LUA_READ                                                                 \
    AXSTM__LUA_CHECK_KEYS                                                               \
    AXSTM__LUA_COMMIT_COMMON                                                            \
    "local n = tonumber(ARGV[1])\n"                                                     \
    "if not reads_valid(6, n, 2) then\n"                                                \
    "  local out, a = {0}, 2\n"                                                         \
    "  for j = 6, 5 + n do\n"                                                           \
    "    local v, i, now = ARGV[a], ARGV[a + 1], state[j]\n"                            \
    "    a = a + 2\n"                                                                   \
    "    if now and (now[1] ~= v or now[2] ~= i) then\n"                                \
    "      out[#out + 1] = {j - 5, now[1], now[2], redis.call('HGET', KEYS[j], 'd')}\n" \
    "    elseif not now and i ~= '-' then\n"                                            \
    "      out[#out + 1] = {j - 5}\n"                                                   \
    "    end\n"                                                                         \
    "  end\n"                                                                           \
    "  return out\n"                                                                    \
    "end\n"                                                                             \
    "local j = 6 + n\n"                                                                 \
    "if j > #KEYS then return {1} end\n"                                                \
    "if not state[j] then return {1, {}} end\n"                                         \
    "return {1, {state[j][1], state[j][2], redis.call('HGET', KEYS[j], 'd')}}\n"

/*
 * A transaction's commit: ARGV[1], ARGV[2] name the commit; ARGV[3] is the
 * run's token (its holds do not stop it; "-": none), ARGV[4] the number n
 * of keys read, at KEYS[6..5 + n] with their versions and incarnations
 * from ARGV[5]; the keys written follow in KEYS, each with its name, what
 * to do and (for "s") its bytes in ARGV; the last word is the change
 * channel.  Answers "0" (a key read has changed: nothing written),
 * "1,stamp", "busy" (a key written is held by another run: nothing
 * written), or "fenced".
 */
#define AXSTM__LUA_TXCOMMIT                                    \
    AXSTM__LUA_CHECK_KEYS                                      \
    AXSTM__LUA_COMMIT_COMMON                                   \
    AXSTM__LUA_HELD                                            \
    "if fenced() then return 'fenced' end\n"                   \
    "local token = ARGV[3]\n"                                  \
    "local n = tonumber(ARGV[4])\n"                            \
    "if not reads_valid(6, n, 5) then return conflict() end\n" \
    "local ops, creates = {}, false\n"                         \
    "local a = 5 + 2 * n\n"                                    \
    "for j = 6 + n, #KEYS do\n"                                \
    "  local op = {name = ARGV[a], what = ARGV[a + 1]}\n"      \
    "  a = a + 2\n"                                            \
    "  if op.what == 's' then op.d = ARGV[a]; a = a + 1 end\n" \
    "  if held(op.name, token) then return 'busy' end\n"       \
    "  creates = creates or op.what == 'd' or not state[j]\n"  \
    "  ops[j] = op\n"                                          \
    "end\n"                                                    \
    "local stamp = begin_writes(creates)\n"                    \
    "if type(stamp) == 'table' then return stamp end\n"        \
    "for j = 6 + n, #KEYS do\n"                                \
    "  write_key(j, ops[j].name, ops[j].what, ops[j].d)\n"     \
    "end\n"                                                    \
    "finish()\n"                                               \
    "return record('1,' .. stamp)\n"

/*
 * What became of a commit whose answer was lost: ARGV[1] names the
 * connection, ARGV[2] the commit's sequence number.  Answers the commit's
 * recorded answer if it ran; otherwise fences the connection, so that the
 * commit can never run later (it may still be on its way: a server that
 * was stopped reads it when it resumes), and answers "fenced".
 */
#define AXSTM__LUA_RESOLVE                                     \
    "local rec = redis.call('HGET', KEYS[4], ARGV[1])\n"       \
    "if rec then\n"                                            \
    "  local sp = string.find(rec, ' ', 1, true)\n"            \
    "  if sp and string.sub(rec, 1, sp - 1) == ARGV[2] then\n" \
    "    return string.sub(rec, sp + 1)\n"                     \
    "  end\n"                                                  \
    "end\n"                                                    \
    "redis.call('HSET', KEYS[4], ARGV[1], 'fenced')\n"         \
    "return 'fenced'\n"

/*
 * Priority for a transaction that keeps losing (redis_txn.c): ARGV[1] is
 * its run's token, ARGV[2] how long the hold lasts (ms), ARGV[3] when the
 * run first asked for a hold (server ms; "0": now, its first time),
 * ARGV[4..] the names of the keys it uses.  While the hold lasts, commits
 * by anyone else that write one of them answer "busy" (AXSTM_BUSY_RETRY)
 * without running, so the holder's next attempt cannot lose.  A hold
 * (token, until when, since when) is taken over by a run that asked
 * earlier: runs get their keys in the order they first asked, so none
 * waits forever.  Answers {0, since} holding nothing when a run that asked
 * as early or earlier holds one of them still; else {1, since}.
 */
#define AXSTM__LUA_HOLD                                                                 \
    "local t = redis.call('TIME')\n"                                                    \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"           \
    "local since = tonumber(ARGV[3])\n"                                                 \
    "if since == 0 then since = now end\n"                                              \
    "for a = 4, #ARGV do\n"                                                             \
    "  local h = redis.call('HGET', KEYS[5], ARGV[a])\n"                                \
    "  local owner, until_ms, asked\n"                                                  \
    "  if h then owner, until_ms, asked = string.match(h, '^(%S+) (%d+) (%d+)$') end\n" \
    "  if owner and owner ~= ARGV[1] and tonumber(until_ms) > now\n"                    \
    "     and tonumber(asked) <= since then return {0, since} end\n"                    \
    "end\n"                                                                             \
    "local hold = ARGV[1] .. ' ' .. (now + tonumber(ARGV[2])) .. ' ' .. since\n"        \
    "for a = 4, #ARGV do redis.call('HSET', KEYS[5], ARGV[a], hold) end\n"              \
    "return {1, since}\n"

/* The end of a hold: ARGV[1] is the token, ARGV[2..] the names; each
 * still held by that token is let go of. */
#define AXSTM__LUA_RELEASE                                               \
    "for a = 2, #ARGV do\n"                                              \
    "  local h = redis.call('HGET', KEYS[5], ARGV[a])\n"                 \
    "  if h and string.sub(h, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then\n" \
    "    redis.call('HDEL', KEYS[5], ARGV[a])\n"                         \
    "  end\n"                                                            \
    "end\n"                                                              \
    "return 1\n"

/* Stats: returns {keys, commits, conflicts, bytes}. */
#define AXSTM__LUA_STATS                                                                \
    AXSTM__LUA_CHECK_KEYS                                                               \
    "if not meta_ok(2) or not meta_ok(3) then return foreign(KEYS[2]) end\n"            \
    "local f = redis.call('HMGET', KEYS[3], 'commits', 'conflicts', 'bytes')\n"         \
    "return {redis.call('SCARD', KEYS[2]), tonumber(f[1] or 0), tonumber(f[2] or 0),\n" \
    "        tonumber(f[3] or 0)}\n"

/* clang-format on */

#endif
