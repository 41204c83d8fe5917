/* SPDX-License-Identifier: MIT */
/*
 * redis_scripts.h -- the server side of a store kept in Redis: one Lua
 * script per kind of call, each run atomically by the server, so that a
 * checkout is one consistent snapshot and a commit is all or nothing.
 *
 * What the server holds, under the store's prefix P:
 *   P k:NAME   a hash per key: v (version, a decimal string, bumped as a
 *              string so that it stays exact past 2^53), i (incarnation:
 *              a new number each time the key is created, so that a handle
 *              of a deleted key never commits over its successor), d (the
 *              value's bytes; absent when the key has no value), s (the
 *              stamp of the last commit that wrote it: see READ);
 *   P births   the last incarnation handed out;
 *   P keys     the set of every key's name (foreach, stats);
 *   P stats    a hash of what the store as a whole keeps:
 *                commits, conflicts, bytes (of values held): counters
 *                (a commit's stamp is the commit count it makes, so
 *                stamps only grow);
 *                per connection that has committed, under its name (see
 *                redis.c: hex digits, dots and digits), the sequence
 *                number and answer of its last commit, or "fenced" once a
 *                client gave up on an answer it lost (see RESOLVE);
 *                under a key's hash name (P k:NAME), a priority hold on
 *                that key (see HOLD): the token of the transaction run
 *                holding it, until when (ms) and since when it asked.
 *              The three kinds of field never meet: a counter's name has
 *              no ':' nor '.', a connection's name no ':', and a hold's
 *              name has "k:".  One hash, so that a commit reads all it
 *              needs of it with one command and writes it with one more.
 * Anything else under a name the scripts use (a string where a hash
 * should be, a hash without v or i) is foreign data: the script stops
 * before its first write with an error starting "AXSTM_FOREIGN" (or the
 * server's WRONGTYPE).  Each script is laid out so that everything that
 * could meet foreign data is read before its first write: every key's
 * hash and the stats hash first, and births and keys, which only creating
 * and deleting write, have their types checked first when a script will
 * write them.  (A version that is not a decimal number is found where it
 * matters: a handle's commit compares it with the one checked out, a
 * checkout hands it to the client, which refuses it, and a transaction's
 * commit, which adds one to a key's version, stops when it does not end
 * in a digit.)
 *
 * Nearly all of a script's time goes to its calls into the server (each
 * costs about as much as a small command sent by a client, thousands of
 * instructions) and to the Lua functions it calls, so a script makes as
 * few of both as it can.  A checkout makes one call per key.  A commit of
 * handles of n keys makes 2n + 3: one per key to read it and one to write
 * it, one to read the stats hash (the connection's record, the commit
 * count and the keys' holds) and one to write it, and one to publish the
 * names written; the client sends each key's new version, and versions
 * and counters stay strings.
 *
 * Every script takes KEYS = P births, P keys, P stats, then the keys'
 * hashes; ARGV starts with the script's own words, then per key what the
 * script needs.  The two commit scripts start ARGV with the connection's
 * name and the commit's sequence number on it: a commit records its
 * answer under that name before it returns, so that a client whose
 * connection was lost with the answer can learn what happened.
 */
#ifndef AXSTM_REDIS_SCRIPTS_H
#define AXSTM_REDIS_SCRIPTS_H

/* clang-format off: each line of Lua stays a line of its own. */

/* What every script over keys starts with.  state_of(k, ...): HMGET of
 * k's v, i and the fields named after k; answers that table, false when
 * k does not exist, or nil for foreign data.  meta_ok(j): the type check
 * of a meta name that creating or deleting needs first. */
#define AXSTM__LUA_PRELUDE                                                    \
    "local function foreign(k)\n"                                             \
    "  return redis.error_reply('AXSTM_FOREIGN ' .. k)\n"                     \
    "end\n"                                                                   \
    "local function state_of(k, ...)\n"                                       \
    "  local f = redis.pcall('HMGET', k, 'v', 'i', ...)\n"                    \
    "  if f.err then return nil end\n"                                        \
    "  if f[1] and f[2] then return f end\n"                                  \
    "  if f[1] or f[2] or redis.call('EXISTS', k) == 1 then return nil end\n" \
    "  return false\n"                                                        \
    "end\n"                                                                   \
    "local function meta_ok(j)\n"                                             \
    "  local t = redis.call('TYPE', KEYS[j])['ok']\n"                         \
    "  return t == 'none' or t == (j == 1 and 'string' or j == 2 and 'set'\n" \
    "                              or 'hash')\n"                              \
    "end\n"

/* A key is born: a new incarnation, the key in the set of keys; answers
 * the incarnation.  Its hash is written by the caller. */
#define AXSTM__LUA_BIRTH                               \
    "local function birth(name)\n"                     \
    "  redis.call('SADD', KEYS[2], name)\n"            \
    "  return tostring(redis.call('INCR', KEYS[1]))\n" \
    "end\n"

/*
 * Checkout: ARGV[1] "1" creates missing keys (version 0, no value, a new
 * incarnation), "0" reports them as absent; ARGV[1 + n] is key n's name.
 * Returns per key {version, incarnation, data or nil}, or {} for an absent
 * key that was not created.
 */
#define AXSTM__LUA_CHECKOUT                                    \
    AXSTM__LUA_PRELUDE                                         \
    AXSTM__LUA_BIRTH                                           \
    "local out, missing = {}, false\n"                         \
    "for j = 4, #KEYS do\n"                                    \
    "  local f = state_of(KEYS[j], 'd')\n"                     \
    "  if f == nil then return foreign(KEYS[j]) end\n"         \
    "  out[j - 3] = f\n"                                       \
    "  missing = missing or not f\n"                           \
    "end\n"                                                    \
    "if missing and ARGV[1] == '1' then\n"                     \
    "  if not (meta_ok(1) and meta_ok(2)) then\n"              \
    "    return foreign(KEYS[1] .. ' or ' .. KEYS[2])\n"       \
    "  end\n"                                                  \
    "  for j = 4, #KEYS do\n"                                  \
    "    if not out[j - 3] then\n"                             \
    "      local born = birth(ARGV[j - 2])\n"                  \
    "      redis.call('HSET', KEYS[j], 'v', '0', 'i', born)\n" \
    "      out[j - 3] = {'0', born, false}\n"                  \
    "    end\n"                                                \
    "  end\n"                                                  \
    "end\n"                                                    \
    "for j = 1, #out do\n"                                     \
    "  if not out[j] then out[j] = {} end\n"                   \
    "end\n"                                                    \
    "return out\n"

/*
 * What both commit scripts share.  bump(s): the decimal string s plus
 * one (nil when s does not end in a digit).  read_meta(first): the stats
 * hash's fields for the connection, the commit count and the holds of
 * the keys' hashes KEYS[first..], or nil for foreign data.  held(h,
 * token): the hold h is another run's than token's and lasts still.
 * write_key(k, name, f, v, what, data, stamp): writes the key's hash k,
 * whose state f was read with its data, at version v by the commit
 * stamped stamp ("s" set, "n" no value, "d" delete; a missing key is
 * born, deleting one is nothing).
 * finish(stamp, answer): records the answer as this connection's last
 * commit, counts the commit and the bytes, and publishes the names
 * written (one message: the connection's name, then each name, separated
 * by NUL bytes).
 */
#define AXSTM__LUA_COMMIT_COMMON                                                           \
    AXSTM__LUA_BIRTH                                                                       \
    "local function bump(s)\n"                                                             \
    "  local last = string.byte(s, -1)\n"                                                  \
    "  if last and last >= 48 and last < 57 then\n"                                        \
    "    return string.sub(s, 1, -2) .. string.char(last + 1)\n"                           \
    "  end\n"                                                                              \
    "  if not string.find(s, '^%d+$') then return nil end\n"                               \
    "  local p = #s\n"                                                                     \
    "  while p > 0 and string.byte(s, p) == 57 do p = p - 1 end\n"                         \
    "  if p == 0 then return '1' .. string.rep('0', #s) end\n"                             \
    "  return string.sub(s, 1, p - 1) .. string.char(string.byte(s, p) + 1)\n"             \
    "         .. string.rep('0', #s - p)\n"                                                \
    "end\n"                                                                                \
    "local function read_meta(first)\n"                                                    \
    "  local f = redis.pcall('HMGET', KEYS[3], ARGV[1], 'commits', unpack(KEYS, first))\n" \
    "  if f.err then return nil end\n"                                                     \
    "  return f\n"                                                                         \
    "end\n"                                                                                \
    "local now\n"                                                                          \
    "local function held(h, token)\n"                                                      \
    "  local owner, until_ms = string.match(h, '^(%S+) (%d+)')\n"                          \
    "  if not owner or owner == token then return false end\n"                             \
    "  if not now then\n"                                                                  \
    "    local t = redis.call('TIME')\n"                                                   \
    "    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                \
    "  end\n"                                                                              \
    "  return tonumber(until_ms) > now\n"                                                  \
    "end\n"                                                                                \
    "local bytes, written = 0, {ARGV[1]}\n"                                                \
    "local function write_key(k, name, f, v, what, data, stamp)\n"                         \
    "  if what == 'd' and not f then return end\n"                                         \
    "  local i\n"                                                                          \
    "  if f then\n"                                                                        \
    "    if f[3] then bytes = bytes - #f[3] end\n"                                         \
    "  else\n"                                                                             \
    "    i = birth(name)\n"                                                                \
    "  end\n"                                                                              \
    "  if what == 'd' then\n"                                                              \
    "    redis.call('DEL', k)\n"                                                           \
    "    redis.call('SREM', KEYS[2], name)\n"                                              \
    "  elseif what == 's' then\n"                                                          \
    "    if i then redis.call('HSET', k, 'v', v, 's', stamp, 'i', i, 'd', data)\n"         \
    "    else redis.call('HSET', k, 'v', v, 's', stamp, 'd', data) end\n"                  \
    "    bytes = bytes + #data\n"                                                          \
    "  else\n"                                                                             \
    "    if i then redis.call('HSET', k, 'v', v, 's', stamp, 'i', i)\n"                    \
    "    else redis.call('HSET', k, 'v', v, 's', stamp) end\n"                             \
    "    if f and f[3] then redis.call('HDEL', k, 'd') end\n"                              \
    "  end\n"                                                                              \
    "  written[#written + 1] = name\n"                                                     \
    "end\n"                                                                                \
    "local function finish(stamp, answer)\n"                                               \
    "  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2] .. ' ' .. answer, 'commits', stamp)\n" \
    "  if bytes ~= 0 then redis.call('HINCRBY', KEYS[3], 'bytes', bytes) end\n"            \
    "  if #written > 1 then\n"                                                             \
    "    redis.call('PUBLISH', ARGV[#ARGV], table.concat(written, '\\0'))\n"               \
    "  end\n"                                                                              \
    "  return answer\n"                                                                    \
    "end\n"                                                                                \
    "local function conflict()\n"                                                          \
    "  redis.call('HINCRBY', KEYS[3], 'conflicts', 1)\n"                                   \
    "  return '0'\n"                                                                       \
    "end\n"

/*
 * Commit of handles (Axon's rule): ARGV[1], ARGV[2] name the commit (see
 * above); then per key five words: name, the version checked out, that
 * version plus one, the incarnation checked out, and what to do ("s" set,
 * "n" no value, "d" delete), and for "s" a sixth, the bytes; the last
 * word is the change channel.  Rejected, with nothing written but the
 * conflict counted, when a key is gone, was created again, or has
 * another version: answers "0".  Else every key is written at the new
 * version and the names published: answers "1,stamp".  A key held by a
 * transaction that keeps losing (HOLD) answers "busy", nothing written; a
 * fenced connection's commit "fenced".
 */
#define AXSTM__LUA_COMMIT                                                              \
    AXSTM__LUA_PRELUDE                                                                 \
    AXSTM__LUA_COMMIT_COMMON                                                           \
    "local state = {}\n"                                                               \
    "for j = 4, #KEYS do\n"                                                            \
    "  local f = state_of(KEYS[j], 'd')\n"                                             \
    "  if f == nil then return foreign(KEYS[j]) end\n"                                 \
    "  state[j] = f\n"                                                                 \
    "end\n"                                                                            \
    "local meta = read_meta(4)\n"                                                      \
    "if not meta then return foreign(KEYS[3]) end\n"                                   \
    "if meta[1] == 'fenced' then return 'fenced' end\n"                                \
    "local a, deletes = 3, false\n"                                                    \
    "for j = 4, #KEYS do\n"                                                            \
    "  local f, what = state[j], ARGV[a + 4]\n"                                        \
    "  if not f or f[1] ~= ARGV[a + 1] or f[2] ~= ARGV[a + 3] then\n"                  \
    "    return conflict()\n"                                                          \
    "  end\n"                                                                          \
    "  if meta[j - 1] and held(meta[j - 1], nil) then return 'busy' end\n"             \
    "  deletes = deletes or what == 'd'\n"                                             \
    "  a = a + (what == 's' and 6 or 5)\n"                                             \
    "end\n"                                                                            \
    "if deletes and not (meta_ok(1) and meta_ok(2)) then\n"                            \
    "  return foreign(KEYS[1] .. ' or ' .. KEYS[2])\n"                                 \
    "end\n"                                                                            \
    "local stamp = bump(meta[2] or '0')\n"                                             \
    "if not stamp then return foreign(KEYS[3]) end\n"                                  \
    "a = 3\n"                                                                          \
    "for j = 4, #KEYS do\n"                                                            \
    "  local what = ARGV[a + 4]\n"                                                     \
    "  write_key(KEYS[j], ARGV[a], state[j], ARGV[a + 2], what, ARGV[a + 5], stamp)\n" \
    "  a = a + (what == 's' and 6 or 5)\n"                                             \
    "end\n"                                                                            \
    "return finish(stamp, '1,' .. stamp)\n"

/*
 * A transaction's read of one or more keys.  An attempt's first few reads
 * each check the keys read before it.  From then on the attempt keeps a
 * commit clock instead: the store's commit count (each commit's stamp)
 * at a moment when every key it has read was as it read it.  A key whose
 * last commit is not after the clock (its field s, written by every
 * commit; a key no commit of this layout wrote counts as 0) has the state
 * it had at that moment, so reading it needs no look at the keys read
 * before, and a read costs the same however many came before it.  When a
 * key changed since, or is absent (it may have been deleted since), the
 * keys read before are checked, and if none changed the clock moves on
 * to now.
 *
 * ARGV[1] is the number n of keys read before that are sent, at
 * KEYS[4..3 + n], with their version and incarnation in ARGV[3..];
 * ARGV[2] is the clock: "?" (none, and none wanted), "-" (none yet: answer
 * one) or the attempt's; with a clock and no reads sent, the keys read
 * before were left out.  The keys to read follow in KEYS.  Answers {0,
 * changed...} when a key read before has changed (the transaction must
 * run again), where each changed key is {its place among the reads (from
 * 1), version, incarnation, data or nil}, or {place} when it is absent
 * now; {2} when the keys read before are needed and were left out; else
 * {1, clock or "-"} and, per key to read, {version, incarnation, data or
 * nil[, stamp or nil]} or {} when it is absent.  Creates nothing: a
 * transaction that does not commit leaves no key.
 */
#define AXSTM__LUA_READ                                                                            \
    AXSTM__LUA_PRELUDE                                                                             \
    "local n, clock = tonumber(ARGV[1]), ARGV[2]\n"                                                \
    "local timed = clock ~= '?' and clock ~= '-'\n"                                                \
    "local out, fresh = {1, clock}, timed\n"                                                       \
    "for j = 4 + n, #KEYS do\n"                                                                    \
    "  local f\n"                                                                                  \
    "  if clock == '?' then f = state_of(KEYS[j], 'd') else f = state_of(KEYS[j], 'd', 's') end\n" \
    "  if f == nil then return foreign(KEYS[j]) end\n"                                             \
    "  out[#out + 1] = f or {}\n"                                                                  \
    "  if fresh then\n"                                                                            \
    "    local s = f and (f[4] or '0')\n"                                                          \
    "    fresh = s and (#s < #clock or (#s == #clock and s <= clock))\n"                           \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "if fresh and #out > 2 then return out end\n"                                                  \
    "if timed and n == 0 then return {2} end\n"                                                    \
    "local changed, a = {0}, 3\n"                                                                  \
    "for r = 4, 3 + n do\n"                                                                        \
    "  local g = state_of(KEYS[r])\n"                                                              \
    "  if g == nil then return foreign(KEYS[r]) end\n"                                             \
    "  local v, i = ARGV[a], ARGV[a + 1]\n"                                                        \
    "  a = a + 2\n"                                                                                \
    "  if g and (g[1] ~= v or g[2] ~= i) then\n"                                                   \
    "    changed[#changed + 1] = {r - 3, g[1], g[2], redis.call('HGET', KEYS[r], 'd')}\n"          \
    "  elseif not g and i ~= '-' then\n"                                                           \
    "    changed[#changed + 1] = {r - 3}\n"                                                        \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "if #changed > 1 then return changed end\n"                                                    \
    "if clock ~= '?' then\n"                                                                       \
    "  local now = redis.pcall('HGET', KEYS[3], 'commits')\n"                                      \
    "  if type(now) == 'table' then return foreign(KEYS[3]) end\n"                                 \
    "  out[2] = now or '0'\n"                                                                      \
    "else\n"                                                                                       \
    "  out[2] = '-'\n"                                                                             \
    "end\n"                                                                                        \
    "return out\n"

/*
 * A transaction's commit: ARGV[1], ARGV[2] name the commit; ARGV[3] is the
 * run's token (its holds do not stop it; "-": none), ARGV[4] the number n
 * of keys read, at KEYS[4..3 + n] with their versions and incarnations
 * from ARGV[5]; the keys written follow in KEYS, each with its name, what
 * to do and (for "s") its bytes in ARGV; the last word is the change
 * channel.  Answers "0" (a key read has changed: nothing written),
 * "1,stamp", "busy" (a key written is held by another run: nothing
 * written), or "fenced".  A key both read and written is read once.
 */
#define AXSTM__LUA_TXCOMMIT                                                                  \
    AXSTM__LUA_PRELUDE                                                                       \
    AXSTM__LUA_COMMIT_COMMON                                                                 \
    "local token, n = ARGV[3], tonumber(ARGV[4])\n"                                          \
    "local first = 4 + n\n"                                                                  \
    "local known, versions = {}, {}\n"                                                       \
    "for j = first, #KEYS do known[KEYS[j]] = true end\n"                                    \
    "local valid, a = true, 5\n"                                                             \
    "for j = 4, first - 1 do\n"                                                              \
    "  local k, f = KEYS[j], nil\n"                                                          \
    "  if known[k] then f = state_of(k, 'd'); known[k] = f\n"                                \
    "  else f = state_of(k) end\n"                                                           \
    "  if f == nil then return foreign(k) end\n"                                             \
    "  local i = ARGV[a + 1]\n"                                                              \
    "  if i == '-' then valid = valid and not f\n"                                           \
    "  else valid = valid and f and f[1] == ARGV[a] and f[2] == i end\n"                     \
    "  a = a + 2\n"                                                                          \
    "end\n"                                                                                  \
    "local creates = false\n"                                                                \
    "for j = first, #KEYS do\n"                                                              \
    "  local k, what = KEYS[j], ARGV[a + 1]\n"                                               \
    "  local f = known[k]\n"                                                                 \
    "  if f == true then\n"                                                                  \
    "    f = state_of(k, 'd')\n"                                                             \
    "    if f == nil then return foreign(k) end\n"                                           \
    "    known[k] = f\n"                                                                     \
    "  end\n"                                                                                \
    "  if f then\n"                                                                          \
    "    versions[j] = bump(f[1])\n"                                                         \
    "    if not versions[j] then return foreign(k) end\n"                                    \
    "  else\n"                                                                               \
    "    versions[j] = '1'\n"                                                                \
    "  end\n"                                                                                \
    "  creates = creates or what == 'd' or not f\n"                                          \
    "  a = a + (what == 's' and 3 or 2)\n"                                                   \
    "end\n"                                                                                  \
    "local meta = read_meta(first)\n"                                                        \
    "if not meta then return foreign(KEYS[3]) end\n"                                         \
    "if meta[1] == 'fenced' then return 'fenced' end\n"                                      \
    "if not valid then return conflict() end\n"                                              \
    "for h = 3, #meta do\n"                                                                  \
    "  if meta[h] and held(meta[h], token) then return 'busy' end\n"                         \
    "end\n"                                                                                  \
    "if creates and not (meta_ok(1) and meta_ok(2)) then\n"                                  \
    "  return foreign(KEYS[1] .. ' or ' .. KEYS[2])\n"                                       \
    "end\n"                                                                                  \
    "local stamp = bump(meta[2] or '0')\n"                                                   \
    "if not stamp then return foreign(KEYS[3]) end\n"                                        \
    "a = 5 + 2 * n\n"                                                                        \
    "for j = first, #KEYS do\n"                                                              \
    "  local what = ARGV[a + 1]\n"                                                           \
    "  write_key(KEYS[j], ARGV[a], known[KEYS[j]], versions[j], what, ARGV[a + 2], stamp)\n" \
    "  a = a + (what == 's' and 3 or 2)\n"                                                   \
    "end\n"                                                                                  \
    "return finish(stamp, '1,' .. stamp)\n"

/*
 * What became of a commit whose answer was lost: ARGV[1] names the
 * connection, ARGV[2] the commit's sequence number.  Answers the commit's
 * recorded answer if it ran; otherwise fences the connection, so that the
 * commit can never run later (it may still be on its way: a server that
 * was stopped reads it when it resumes), and answers "fenced".
 */
#define AXSTM__LUA_RESOLVE                                     \
    "local rec = redis.call('HGET', KEYS[3], ARGV[1])\n"       \
    "if rec then\n"                                            \
    "  local sp = string.find(rec, ' ', 1, true)\n"            \
    "  if sp and string.sub(rec, 1, sp - 1) == ARGV[2] then\n" \
    "    return string.sub(rec, sp + 1)\n"                     \
    "  end\n"                                                  \
    "end\n"                                                    \
    "redis.call('HSET', KEYS[3], ARGV[1], 'fenced')\n"         \
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
    "if #KEYS < 4 then return {1, since} end\n"                                         \
    "local got = redis.call('HMGET', KEYS[3], unpack(KEYS, 4))\n"                       \
    "for x = 1, #got do\n"                                                              \
    "  local h, owner, until_ms, asked = got[x]\n"                                      \
    "  if h then owner, until_ms, asked = string.match(h, '^(%S+) (%d+) (%d+)$') end\n" \
    "  if owner and owner ~= ARGV[1] and tonumber(until_ms) > now\n"                    \
    "     and tonumber(asked) <= since then return {0, since} end\n"                    \
    "end\n"                                                                             \
    "local hold = ARGV[1] .. ' ' .. (now + tonumber(ARGV[2])) .. ' ' .. since\n"        \
    "local set = {}\n"                                                                  \
    "for x = 1, #got do set[2 * x - 1], set[2 * x] = KEYS[3 + x], hold end\n"           \
    "redis.call('HSET', KEYS[3], unpack(set))\n"                                        \
    "return {1, since}\n"

/* The end of a hold: ARGV[1] is the token, ARGV[2..] the names; each
 * still held by that token is let go of. */
#define AXSTM__LUA_RELEASE                                               \
    "if #KEYS < 4 then return 1 end\n"                                   \
    "local mine = {}\n"                                                  \
    "local got = redis.call('HMGET', KEYS[3], unpack(KEYS, 4))\n"        \
    "for x = 1, #got do\n"                                               \
    "  local h = got[x]\n"                                               \
    "  if h and string.sub(h, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then\n" \
    "    mine[#mine + 1] = KEYS[3 + x]\n"                                \
    "  end\n"                                                            \
    "end\n"                                                              \
    "if #mine > 0 then redis.call('HDEL', KEYS[3], unpack(mine)) end\n"  \
    "return 1\n"

/* Stats: returns {keys, commits, conflicts, bytes}. */
#define AXSTM__LUA_STATS                                                                \
    AXSTM__LUA_PRELUDE                                                                  \
    "if not meta_ok(2) or not meta_ok(3) then return foreign(KEYS[2]) end\n"            \
    "local f = redis.call('HMGET', KEYS[3], 'commits', 'conflicts', 'bytes')\n"         \
    "return {redis.call('SCARD', KEYS[2]), tonumber(f[1] or 0), tonumber(f[2] or 0),\n" \
    "        tonumber(f[3] or 0)}\n"

/* clang-format on */

#endif
