/*
 * The Redis Streams queue driver (redis://host:port[/db]).
 *
 * Layout, every key under the prefix "imagen:":
 *   imagen:q:<op>               a stream per operation; consumer group "imagen"
 *   imagen:job:<id>             hash: every imagen_job field, plus the current
 *                               stream entry id ("entry"), the lease token
 *                               ("token") and, while dead, the dead-letter
 *                               entry id ("dead_entry")
 *   imagen:dead:<op>            dead-letter stream, one entry (id, error) per dead job
 *   imagen:delayed:<op>         zset of jobs waiting out a retry delay, score = due ms
 *   imagen:counts:<op>          hash: how many jobs of the op are in each state
 *   imagen:state:<op>:<state>   zsets of the op's done, failed and dead
 *                               jobs, score = created_ms (requeue takes
 *                               failed and dead ones out)
 *   imagen:layout               2: the layout above (see lua_migrate)
 *   imagen:ops                  set of every op that ever had a job
 *   imagen:min_lease_ms         the shortest lease any consumer has taken, so
 *                               pull scans only PEL entries idle that long
 *
 * Every state transition is one Lua script, so the hash, the counts, the
 * indexes, the stream and its pending-entries list (PEL) change together even when
 * two workers race; the scripts build key names themselves, which is fine on
 * a single Redis (Redis Cluster is not supported). A lease is the PEL entry
 * of the job's stream entry plus a random token kept in the hash: expiry is
 * the entry's idle time in the PEL reaching the lease length of the consumer
 * that took it (kept in the hash; pull reclaims such entries with XCLAIM),
 * extend resets that idle time (XCLAIM with min-idle 0), and every end of a
 * delivery first checks that the hash still holds the caller's token, so a
 * worker whose lease went to someone else cannot ack over the new delivery.
 *
 * Entries are XACKed and XDELed as soon as their delivery ends and nothing is
 * ever trimmed (no MAXLEN): a pending entry must never disappear under a
 * running job, and ended entries are already gone. So the stream holds
 * exactly the jobs queued or in hand (XLEN is what autoscalers watch), and
 * queued and running jobs are found from the stream and its PEL: only the
 * three final states need indexes of their own.
 *
 * The hot path is batched: publish takes any number of jobs, pull delivers
 * up to `max`, and one finish script ends any number of deliveries, so a
 * batch pays a round trip and a script's fixed costs once.
 *
 * hiredis contexts are not thread-safe and a blocking wait holds one, so the
 * driver keeps a small pool: a call takes a context and gives it back. A
 * context that saw an I/O error is dropped; the next call reconnects, which
 * is how a Redis restart is survived.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "common/log.h"
#include "common/time.h"
#include "queue/queue_driver.h"

/* Idle connections kept; more threads than this still work, the extra
 * contexts are just closed when given back. */
#define REDIS_POOL_MAX 8
/* Connecting must not hang a worker when Redis is down. */
#define REDIS_CONNECT_TIMEOUT_MS 2000
/* Added to any blocking time to get a command's I/O timeout. */
#define REDIS_COMMAND_SLACK_MS 2000
/* A waiting pull re-runs its script at least this often, so that leases
 * that expire and retry delays that end during the wait are noticed. */
#define REDIS_PULL_POLL_MS 250

/* ---- Lua scripts ---------------------------------------------------------- */

/* The fields of a job's record in the order every script returns them
 * (HMGET), and the order job_from_fields() reads: 1-based positions in Lua,
 * 0-based in C. "entry" is last and not part of imagen_job. */
#define JOB_FIELDS_LUA                                                                                  \
    "local JF = {'id', 'op', 'spec', 'state', 'attempts', 'created_ms', 'started_ms', 'finished_ms',\n" \
    "            'updated_ms', 'consumer', 'error', 'output', 'timings', 'entry'}\n"
enum {
    JF_ID,
    JF_OP,
    JF_SPEC,
    JF_STATE,
    JF_ATTEMPTS,
    JF_CREATED,
    JF_STARTED,
    JF_FINISHED,
    JF_UPDATED,
    JF_CONSUMER,
    JF_ERROR,
    JF_OUTPUT,
    JF_TIMINGS,
    JF_COUNT_
};

/* Helpers shared by every script (prepended to each).
 *
 * State changes go through set_state(), which does not write the counts at
 * once: it sums them per op and state, and flush() writes the sums (and the
 * ids that became done) at the end of the script. A batch of 256 jobs thus
 * costs a handful of HINCRBYs and one ZADD instead of several commands per
 * job, and every script that changes a state ends with flush(). */
#define LUA_PRELUDE                                                                                                   \
    "local P = 'imagen:'\n"                                                                                           \
    "local function jkey(id) return P .. 'job:' .. id end\n"                                                          \
    "local function qkey(op) return P .. 'q:' .. op end\n"                                                            \
    "local function dkey(op) return P .. 'delayed:' .. op end\n"                                                      \
    "local function deadkey(op) return P .. 'dead:' .. op end\n"                                                      \
    "local function ckey(op) return P .. 'counts:' .. op end\n"                                                       \
    "local function skey(op, st) return P .. 'state:' .. op .. ':' .. st end\n" JOB_FIELDS_LUA                        \
    "local function record(id) return redis.call('HMGET', jkey(id), unpack(JF)) end\n" /* The group reads from 0 so   \
                                                                                          that nothing already in the \
                                                                                          stream is skipped; a stream \
                                                                                          someone else made, or whose \
                                                                                          group was destroyed, gets   \
                                                                                          the group too: every later  \
                                                                                          command on it would fail    \
                                                                                          halfway through a script.   \
                                                                                          */                          \
    "local function ensure_group(op)\n"                                                                               \
    "  local q = qkey(op)\n"                                                                                          \
    "  if redis.call('EXISTS', q) == 1 then\n"                                                                        \
    "    for _, g in ipairs(redis.call('XINFO', 'GROUPS', q)) do\n"                                                   \
    "      for i = 1, #g, 2 do\n"                                                                                     \
    "        if g[i] == 'name' and g[i + 1] == 'imagen' then return end\n"                                            \
    "      end\n"                                                                                                     \
    "    end\n"                                                                                                       \
    "  end\n"                                                                                                         \
    "  redis.pcall('XGROUP', 'CREATE', q, 'imagen', '0', 'MKSTREAM')\n"                                               \
    "end\n"                                                                                                           \
    "local delta, done_ids = {}, {}\n"                                                                                \
    "local function set_state(id, op, from, to, created)\n"                                                           \
    "  local t = delta[op]\n"                                                                                         \
    "  if not t then t = {}; delta[op] = t end\n"                                                                     \
    "  if from then\n"                                                                                                \
    "    t[from] = (t[from] or 0) - 1\n"                                                                              \
    "    if from == 'failed' or from == 'dead' then redis.call('ZREM', skey(op, from), id) end\n"                     \
    "  end\n"                                                                                                         \
    "  t[to] = (t[to] or 0) + 1\n"                                                                                    \
    "  if to == 'done' then\n"                                                                                        \
    "    local d = done_ids[op]\n"                                                                                    \
    "    if not d then d = {}; done_ids[op] = d end\n"                                                                \
    "    d[#d + 1] = tonumber(created) or 0\n"                                                                        \
    "    d[#d + 1] = id\n"                                                                                            \
    "  elseif to == 'failed' or to == 'dead' then\n"                                                                  \
    "    redis.call('ZADD', skey(op, to), tonumber(created) or 0, id)\n"                                              \
    "  end\n"                                                                                                         \
    "end\n" /* cmd key [extra] items..., in chunks that stay within Lua's unpack() limit */                           \
    "local function bulk(cmd, key, extra, items)\n"                                                                   \
    "  for i = 1, #items, 512 do\n"                                                                                   \
    "    local a = {}\n"                                                                                              \
    "    if extra then a[1] = extra end\n"                                                                            \
    "    for j = i, math.min(i + 511, #items) do a[#a + 1] = items[j] end\n"                                          \
    "    redis.call(cmd, key, unpack(a))\n"                                                                           \
    "  end\n"                                                                                                         \
    "end\n"                                                                                                           \
    "local function flush()\n"                                                                                        \
    "  for op, d in pairs(done_ids) do bulk('ZADD', skey(op, 'done'), nil, d) end\n"                                  \
    "  for op, t in pairs(delta) do\n"                                                                                \
    "    for st, n in pairs(t) do\n"                                                                                  \
    "      if n ~= 0 then redis.call('HINCRBY', ckey(op), st, n) end\n"                                               \
    "    end\n"                                                                                                       \
    "  end\n"                                                                                                         \
    "  delta, done_ids = {}, {}\n"                                                                                    \
    "end\n"                                                                                                           \
    "local function drop_entry(op, entry)\n"                                                                          \
    "  if entry and entry ~= '' then\n"                                                                               \
    "    redis.call('XACK', qkey(op), 'imagen', entry)\n"                                                             \
    "    redis.call('XDEL', qkey(op), entry)\n"                                                                       \
    "  end\n"                                                                                                         \
    "end\n"                                                                                                           \
    "local function last_delivered(op)\n"                                                                             \
    "  for _, g in ipairs(redis.call('XINFO', 'GROUPS', qkey(op))) do\n"                                              \
    "    local name, last\n"                                                                                          \
    "    for i = 1, #g, 2 do\n"                                                                                       \
    "      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end\n"      \
    "    end\n"                                                                                                       \
    "    if name == 'imagen' then return last end\n"                                                                  \
    "  end\n"                                                                                                         \
    "  return '0-0'\n"                                                                                                \
    "end\n"                                                                                                           \
    "local function enqueue(id, op)\n"                                                                                \
    "  ensure_group(op)\n"                                                                                            \
    "  local e = redis.call('XADD', qkey(op), '*', 'id', id)\n"                                                       \
    "  redis.call('HSET', jkey(id), 'entry', e)\n"                                                                    \
    "end\n"                                                                                                           \
    "local function to_dead(id, op, from, created, msg, now)\n"                                                       \
    "  local d = redis.call('XADD', deadkey(op), '*', 'id', id, 'error', msg)\n"                                      \
    "  redis.call('HSET', jkey(id), 'state', 'dead', 'error', msg, 'finished_ms', now, 'updated_ms', now,\n"          \
    "             'entry', '', 'token', '', 'dead_entry', d)\n"                                                       \
    "  set_state(id, op, from, 'dead', created)\n"                                                                    \
    "end\n" /* The check every end of a delivery starts with. */                                                      \
    "local function leased(id, token)\n"                                                                              \
    "  local v = redis.call('HMGET', jkey(id), 'state', 'token', 'op', 'entry', 'created_ms', 'attempts')\n"          \
    "  if v[1] ~= 'running' or v[2] ~= token then return nil end\n"                                                   \
    "  return v\n"                                                                                                    \
    "end\n"                                                                                                           \
    "local function requeue(id, now)\n"                                                                               \
    "  local v = redis.call('HMGET', jkey(id), 'state', 'op', 'created_ms', 'dead_entry')\n"                          \
    "  if not v[1] then return 'NOTFOUND' end\n"                                                                      \
    "  if v[1] ~= 'failed' and v[1] ~= 'dead' then return v[1] end\n"                                                 \
    "  local op = v[2]\n"                                                                                             \
    "  if v[4] then\n"                                                                                                \
    "    redis.call('XDEL', deadkey(op), v[4])\n"                                                                     \
    "    redis.call('HDEL', jkey(id), 'dead_entry')\n"                                                                \
    "  end\n"                                                                                                         \
    "  redis.call('ZREM', dkey(op), id)\n"                                                                            \
    "  redis.call('HSET', jkey(id), 'state', 'queued', 'attempts', 0, 'finished_ms', 0, 'updated_ms', now,\n"         \
    "             'token', '')\n"                                                                                     \
    "  set_state(id, op, v[1], 'queued', v[3])\n"                                                                     \
    "  enqueue(id, op)\n"                                                                                             \
    "  return 'OK'\n"                                                                                                 \
    "end\n"

/* ARGV: op, now, then id, spec for each job: all published or, when an id
 * is taken, none. Fields a new job does not have yet (attempts, started_ms,
 * consumer...) are left out of its hash and read as 0 or none. */
static const char lua_publish[] = LUA_PRELUDE
    "local op, now = ARGV[1], ARGV[2]\n"
    "for i = 3, #ARGV, 2 do\n"
    "  if redis.call('EXISTS', jkey(ARGV[i])) == 1 then return redis.error_reply('job ' .. ARGV[i] .. ' already "
    "exists') end\n"
    "end\n"
    "redis.call('SADD', P .. 'ops', op)\n"
    "ensure_group(op)\n"
    "local q = qkey(op)\n"
    "for i = 3, #ARGV, 2 do\n"
    "  local id = ARGV[i]\n"
    "  local e = redis.call('XADD', q, '*', 'id', id)\n"
    "  redis.call('HSET', jkey(id), 'id', id, 'op', op, 'spec', ARGV[i + 1], 'state', 'queued', 'created_ms', now,\n"
    "             'updated_ms', now, 'entry', e)\n"
    "end\n"
    "redis.call('HINCRBY', ckey(op), 'queued', (#ARGV - 2) / 2)\n"
    "return 'OK'\n";

/* ARGV: consumer, lease_ms, max, now, max_attempts, token prefix, ops...
 * Returns {deliveries {{token, record (JF order)}...}, next retry due ms or
 * -1, {last entry id per op stream}, stale entries dropped}. */
static const char lua_pull[] = LUA_PRELUDE
    "local consumer, lease_ms, max, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]\n"
    "local max_attempts, prefix = tonumber(ARGV[5]), ARGV[6]\n"
    "local ops = {}\n"
    "for i = 7, #ARGV do ops[#ops + 1] = ARGV[i] end\n"
    "local out, seq, stale = {}, 0, 0\n"
    /* v is the job's record as record() read it; the delivery is returned
     * as that record with this delivery's changes applied. */
    "local function deliver(id, op, from, v)\n"
    "  seq = seq + 1\n"
    "  local token = prefix .. '.' .. seq\n"
    "  local attempts = (tonumber(v[5]) or 0) + 1\n"
    "  redis.call('HSET', jkey(id), 'state', 'running', 'attempts', attempts, 'token', token, 'consumer', consumer,\n"
    "             'started_ms', now, 'updated_ms', now, 'lease_ms', lease_ms)\n"
    "  v[4], v[5], v[7], v[9], v[10] = 'running', attempts, now, now, consumer\n"
    "  set_state(id, op, from, 'running', v[6])\n"
    "  out[#out + 1] = {token, v}\n"
    "end\n"
    "for _, op in ipairs(ops) do ensure_group(op) end\n"
    /* 1. Expired leases. Each delivery keeps the lease length of the
     * consumer that took it (the hash's lease_ms), and an entry is expired
     * when its idle time in the PEL reaches that length; XAUTOCLAIM would
     * apply this consumer's own lease length to everyone's deliveries. The
     * PEL holds only jobs in flight, so scanning it is cheap. */
    "local function reclaim(op, entry, f)\n"
    "  local id = (type(f) == 'table') and f[2] or nil\n"
    "  local v = id and record(id)\n"
    "  if not v or v[14] ~= entry or (v[4] ~= 'running' and v[4] ~= 'queued') then\n"
    "    drop_entry(op, entry)\n"
    "  elseif v[4] == 'running' and (tonumber(v[5]) or 0) >= max_attempts then\n"
    "    drop_entry(op, entry)\n"
    "    to_dead(id, op, 'running', v[6], 'lease expired on delivery ' .. v[5] .. ' of ' .. max_attempts, now)\n"
    "  else\n"
    "    deliver(id, op, v[4], v)\n"
    "  end\n"
    "end\n"
    /* Only entries idle for at least the shortest lease any consumer has
     * taken can have expired: XPENDING's IDLE filter leaves the healthy
     * deliveries out of the scan. A stale minimum only widens the scan. */
    "local floor = tonumber(redis.call('GET', P .. 'min_lease_ms'))\n"
    "if not floor or lease_ms < floor then redis.call('SET', P .. 'min_lease_ms', lease_ms); floor = lease_ms end\n"
    /* Pages of 1000 from the oldest, so that healthy long leases ahead in
     * the PEL cannot hide an expired short one behind them; at most 50
     * pages per pull bound the script's time. */
    "for _, op in ipairs(ops) do\n"
    "  local from, pages = '-', 0\n"
    "  while #out < max and pages < 50 do\n"
    "  pages = pages + 1\n"
    "  local page = redis.call('XPENDING', qkey(op), 'imagen', 'IDLE', floor, from, '+', 1000)\n"
    "  for _, p in ipairs(page) do\n"
    "    if #out >= max then break end\n"
    "    local entry, idle = p[1], tonumber(p[3])\n"
    "    local e = redis.call('XRANGE', qkey(op), entry, entry)[1]\n"
    "    if not e then\n"
    "      redis.call('XACK', qkey(op), 'imagen', entry)\n" /* deleted under the PEL */
    "    else\n"
    "      local held = tonumber(redis.call('HGET', jkey(e[2][2]), 'lease_ms')) or lease_ms\n"
    "      if idle >= held then\n"
    "        for _, c in ipairs(redis.call('XCLAIM', qkey(op), 'imagen', consumer, held, entry)) do\n"
    "          if type(c) == 'table' then reclaim(op, c[1], c[2]) end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if #page < 1000 then break end\n"
    "  from = '(' .. page[#page][1]\n"
    "  end\n"
    "end\n"
    /* 2. Retry delays that have ended go back into the stream. */
    "for _, op in ipairs(ops) do\n"
    "  for _, id in ipairs(redis.call('ZRANGEBYSCORE', dkey(op), '-inf', now, 'LIMIT', 0, 1000)) do\n"
    "    redis.call('ZREM', dkey(op), id)\n"
    "    if redis.call('HGET', jkey(id), 'state') == 'queued' then enqueue(id, op) end\n"
    "  end\n"
    "end\n"
    /* 3. New entries. XREADGROUP over several streams takes COUNT from each,
     * so the script first peeks past the group's last-delivered id, merges
     * the streams oldest job first (ties in the ops' order) and then reads
     * exactly the chosen prefix of each stream. An entry is delivered only
     * when its job is queued and still points at it; anything else is a
     * stale entry and is dropped. */
    "local function fresh(id, entry)\n"
    "  local v = id and record(id)\n"
    "  if v and v[4] == 'queued' and v[14] == entry then return v end\n"
    "  return nil\n"
    "end\n"
    "local want = max - #out\n"
    /* One op (the usual worker): XREADGROUP reads exactly what is wanted. */
    "if want > 0 and #ops == 1 then\n"
    "  local op = ops[1]\n"
    "  local r = redis.call('XREADGROUP', 'GROUP', 'imagen', consumer, 'COUNT', want, 'STREAMS', qkey(op), '>')\n"
    "  for _, e in ipairs((r and r[1] and r[1][2]) or {}) do\n"
    "    local id = type(e[2]) == 'table' and e[2][2] or nil\n"
    "    local v = fresh(id, e[1])\n"
    "    if v then\n"
    "      deliver(id, op, 'queued', v)\n"
    "    else\n"
    "      drop_entry(op, e[1]); stale = stale + 1\n"
    "    end\n"
    "  end\n"
    "  want = 0\n"
    "end\n"
    "if want > 0 then\n"
    "  local cands = {}\n"
    "  for i, op in ipairs(ops) do\n"
    "    local list = {}\n"
    "    for _, e in ipairs(redis.call('XRANGE', qkey(op), '(' .. last_delivered(op), '+', 'COUNT', want)) do\n"
    "      local id = e[2][2]\n"
    "      local v = fresh(id, e[1])\n"
    "      list[#list + 1] = {e[1], id, v, v and tonumber(v[6]) or 0}\n"
    "    end\n"
    "    cands[i] = {list = list, pos = 1}\n"
    "  end\n"
    "  local function skip_stale(c)\n"
    "    while c.list[c.pos] and not c.list[c.pos][3] do c.pos = c.pos + 1; stale = stale + 1 end\n"
    "  end\n"
    "  local order = {}\n"
    "  while #order < want do\n"
    "    local best\n"
    "    for i, c in ipairs(cands) do\n"
    "      skip_stale(c)\n"
    "      local h = c.list[c.pos]\n"
    "      if h and (not best or h[4] < cands[best].list[cands[best].pos][4]) then best = i end\n"
    "    end\n"
    "    if not best then break end\n"
    "    local c = cands[best]\n"
    "    order[#order + 1] = {best, c.list[c.pos]}\n"
    "    c.pos = c.pos + 1\n"
    "  end\n"
    "  local got = {}\n"
    "  for i, c in ipairs(cands) do\n"
    "    if c.pos > 1 then\n"
    "      local r = redis.call('XREADGROUP', 'GROUP', 'imagen', consumer, 'COUNT', c.pos - 1, 'STREAMS',\n"
    "                           qkey(ops[i]), '>')\n"
    "      local es = (r and r[1] and r[1][2]) or {}\n"
    "      for _, e in ipairs(es) do got[i .. ' ' .. e[1]] = true end\n"
    "      for _, h in ipairs(c.list) do\n"
    "        if got[i .. ' ' .. h[1]] and not h[3] then drop_entry(ops[i], h[1]) end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  for _, o in ipairs(order) do\n"
    "    local h = o[2]\n"
    "    if got[o[1] .. ' ' .. h[1]] then deliver(h[2], ops[o[1]], 'queued', h[3]) end\n"
    "  end\n"
    "end\n"
    "flush()\n"
    "local next_due = -1\n"
    "for _, op in ipairs(ops) do\n"
    "  local d = redis.call('ZRANGE', dkey(op), 0, 0, 'WITHSCORES')\n"
    "  if d[2] then\n"
    "    local s = tonumber(d[2])\n"
    "    if next_due < 0 or s < next_due then next_due = s end\n"
    "  end\n"
    "end\n"
    "local last = {}\n"
    "for i, op in ipairs(ops) do\n"
    "  local r = redis.call('XREVRANGE', qkey(op), '+', '-', 'COUNT', 1)\n"
    "  last[i] = (r[1] and r[1][1]) or '0-0'\n"
    "end\n"
    "return {out, next_due, last, stale}\n";

/* ARGV: id, token, consumer. XCLAIM with min-idle 0 resets the entry's idle
 * time, which is what the lease's expiry is measured by. */
static const char lua_extend[] = LUA_PRELUDE "local v = leased(ARGV[1], ARGV[2])\n"
                                             "if not v then return 'LOST' end\n"
                                             "redis.call('XCLAIM', qkey(v[3]), 'imagen', ARGV[3], 0, v[4], 'JUSTID')\n"
                                             "return 'OK'\n";

/* ARGV: now, then for each delivery: id, token, state ("done" or "failed"),
 * output ('' = none), error ('' = keep), timings ('' = keep). Returns one
 * 'OK' or 'LOST' per delivery. The ended entries are XACKed and XDELed
 * together per stream, after the records. */
static const char lua_finish[] =
    LUA_PRELUDE "local now = ARGV[1]\n"
                "local res, ended = {}, {}\n"
                "for i = 2, #ARGV, 6 do\n"
                "  local id, st = ARGV[i], ARGV[i + 2]\n"
                "  local v = leased(id, ARGV[i + 1])\n"
                "  if not v then\n"
                "    res[#res + 1] = 'LOST'\n"
                "  else\n"
                "    local op = v[3]\n"
                "    if v[4] and v[4] ~= '' then\n"
                "      local e = ended[op]\n"
                "      if not e then e = {}; ended[op] = e end\n"
                "      e[#e + 1] = v[4]\n"
                "    end\n"
                "    local f = {'state', st, 'finished_ms', now, 'updated_ms', now, 'entry', '', 'token', ''}\n"
                "    if ARGV[i + 3] ~= '' then f[#f + 1] = 'output'; f[#f + 1] = ARGV[i + 3] end\n"
                "    if ARGV[i + 4] ~= '' then f[#f + 1] = 'error'; f[#f + 1] = ARGV[i + 4] end\n"
                "    if ARGV[i + 5] ~= '' then f[#f + 1] = 'timings'; f[#f + 1] = ARGV[i + 5] end\n"
                "    redis.call('HSET', jkey(id), unpack(f))\n"
                "    set_state(id, op, 'running', st, v[5])\n"
                "    res[#res + 1] = 'OK'\n"
                "  end\n"
                "end\n"
                "for op, e in pairs(ended) do\n"
                "  bulk('XACK', qkey(op), 'imagen', e)\n"
                "  bulk('XDEL', qkey(op), nil, e)\n"
                "end\n"
                "flush()\n"
                "return res\n";

/* ARGV: id, token, now, message, due ms, max_attempts, timings ('' = keep). */
static const char lua_retry[] = LUA_PRELUDE
    "local id, now = ARGV[1], ARGV[3]\n"
    "local v = leased(id, ARGV[2])\n"
    "if not v then return 'LOST' end\n"
    "local op = v[3]\n"
    "drop_entry(op, v[4])\n"
    "if ARGV[7] ~= '' then redis.call('HSET', jkey(id), 'timings', ARGV[7]) end\n"
    "if (tonumber(v[6]) or 0) >= tonumber(ARGV[6]) then\n"
    "  to_dead(id, op, 'running', v[5], ARGV[4], now)\n"
    "  flush()\n"
    "  return 'DEAD'\n"
    "end\n"
    "redis.call('HSET', jkey(id), 'state', 'queued', 'error', ARGV[4], 'updated_ms', now, 'entry', '', 'token', '')\n"
    "set_state(id, op, 'running', 'queued', v[5])\n"
    "redis.call('ZADD', dkey(op), ARGV[5], id)\n"
    "flush()\n"
    "return 'QUEUED'\n";

/* ARGV: id, token, now. */
static const char lua_release[] =
    LUA_PRELUDE "local id, now = ARGV[1], ARGV[3]\n"
                "local v = leased(id, ARGV[2])\n"
                "if not v then return 'LOST' end\n"
                "drop_entry(v[3], v[4])\n"
                "local a = (tonumber(v[6]) or 0) - 1\n"
                "if a < 0 then a = 0 end\n"
                "redis.call('HSET', jkey(id), 'state', 'queued', 'attempts', a, 'updated_ms', now, 'token', '')\n"
                "set_state(id, v[3], 'running', 'queued', v[5])\n"
                "enqueue(id, v[3])\n"
                "flush()\n"
                "return 'OK'\n";

/* ARGV: id, now. Returns 'OK', 'NOTFOUND' or the state that forbids it. */
static const char lua_requeue[] = LUA_PRELUDE "local r = requeue(ARGV[1], ARGV[2])\n"
                                              "flush()\n"
                                              "return r\n";

/* ARGV: now, op ('' = every op). Returns how many were requeued. */
static const char lua_requeue_dead[] =
    LUA_PRELUDE "local ops = (ARGV[2] ~= '' and {ARGV[2]}) or redis.call('SMEMBERS', P .. 'ops')\n"
                "local n = 0\n"
                "for _, op in ipairs(ops) do\n"
                "  for _, id in ipairs(redis.call('ZRANGE', skey(op, 'dead'), 0, -1)) do\n"
                "    if requeue(id, ARGV[1]) == 'OK' then n = n + 1 end\n"
                "  end\n"
                "end\n"
                "flush()\n"
                "return n\n";

/* Returns {{op, queued, running, done, failed, dead}...} sorted by op. */
static const char lua_counts[] =
    LUA_PRELUDE "local ops = redis.call('SMEMBERS', P .. 'ops')\n"
                "table.sort(ops)\n"
                "local out = {}\n"
                "for _, op in ipairs(ops) do\n"
                "  local c = redis.call('HMGET', ckey(op), 'queued', 'running', 'done', 'failed', 'dead')\n"
                "  local row = {op}\n"
                "  for i = 1, 5 do row[#row + 1] = tonumber(c[i]) or 0 end\n"
                "  out[#out + 1] = row\n"
                "end\n"
                "return out\n";

/* ARGV: op ('' = all), state ('' = all), limit. Returns records (JF order),
 * newest created first. Where each state's jobs are found:
 *   queued   the stream's entries after the group's last delivered one
 *            (not delivered yet), walked from the newest, and the jobs
 *            waiting out a retry delay;
 *   running  the group's pending entries (the jobs in flight);
 *   done, failed, dead  their zsets, by created time.
 * A job created later than another was also enqueued no earlier, except
 * for one enqueued again (released, retried, requeued), so the walk of the
 * stream stops once `limit` queued jobs are newer than the entries left:
 * with a minute's margin for clocks that disagree (created_ms is the
 * publisher's clock, entry ids Redis's), and after 10,000 entries at most,
 * which bounds how long a listing holds Redis. */
static const char lua_list[] =
    LUA_PRELUDE "local ops = (ARGV[1] ~= '' and {ARGV[1]}) or redis.call('SMEMBERS', P .. 'ops')\n"
                "local states = (ARGV[2] ~= '' and {ARGV[2]}) or {'queued', 'running', 'done', 'failed', 'dead'}\n"
                "local limit = tonumber(ARGV[3])\n"
                "local SKEW_MS, SCAN_MAX = 60000, 10000\n"
                "local wanted, seen, all = {}, {}, {}\n"
                "for _, st in ipairs(states) do wanted[st] = true end\n"
                /* Reads a candidate's record once; returns its created time
                 * when it is in a wanted state. */
                "local function add(id)\n"
                "  if not id or seen[id] then return nil end\n"
                "  seen[id] = true\n"
                "  local v = record(id)\n"
                "  if not v[1] or not wanted[v[4]] then return nil end\n"
                "  local created = tonumber(v[6]) or 0\n"
                "  all[#all + 1] = {created, id, v}\n"
                "  return created, v[4]\n"
                "end\n"
                "local function entry_job(e) return type(e[2]) == 'table' and e[2][2] or nil end\n"
                "local function walk_queued(op)\n"
                "  local from, hi, found, scanned = '(' .. last_delivered(op), '+', {}, 0\n"
                "  while scanned < SCAN_MAX do\n"
                "    local page = redis.call('XREVRANGE', qkey(op), hi, from, 'COUNT', limit)\n"
                "    for _, e in ipairs(page) do\n"
                "      local created, st = add(entry_job(e))\n"
                "      if st == 'queued' then found[#found + 1] = created end\n"
                "    end\n"
                "    scanned = scanned + #page\n"
                "    if #page < limit then return end\n"
                "    local last = page[#page][1]\n"
                "    if #found >= limit then\n"
                "      table.sort(found, function(x, y) return x > y end)\n"
                "      if found[limit] > tonumber(string.match(last, '^(%d+)')) + SKEW_MS then return end\n"
                "    end\n"
                "    hi = '(' .. last\n"
                "  end\n"
                "end\n"
                "for _, op in ipairs(ops) do\n"
                "  local has_q = redis.call('EXISTS', qkey(op)) == 1\n"
                "  for _, st in ipairs(states) do\n"
                "    if st == 'queued' then\n"
                "      if has_q then walk_queued(op) end\n"
                "      for _, id in ipairs(redis.call('ZRANGE', dkey(op), 0, SCAN_MAX - 1)) do add(id) end\n"
                "    elseif st == 'running' then\n"
                /* pcall: a stream without the group (not made by us) has no
                 * jobs in flight, and listing must not fail on it. */
                "      local pel = has_q and redis.pcall('XPENDING', qkey(op), 'imagen', '-', '+', SCAN_MAX)\n"
                "      if type(pel) == 'table' and not pel.err then\n"
                "        for _, p in ipairs(pel) do\n"
                "          local e = redis.call('XRANGE', qkey(op), p[1], p[1])[1]\n"
                "          if e then add(entry_job(e)) end\n"
                "        end\n"
                "      end\n"
                "    else\n"
                "      for _, id in ipairs(redis.call('ZREVRANGE', skey(op, st), 0, limit - 1)) do add(id) end\n"
                "    end\n"
                "  end\n"
                "end\n"
                "table.sort(all, function(a, b)\n"
                "  if a[1] ~= b[1] then return a[1] > b[1] end\n"
                "  return a[2] > b[2]\n"
                "end)\n"
                "local out = {}\n"
                "for i = 1, math.min(limit, #all) do out[#out + 1] = all[i][3] end\n"
                "return out\n";

/* Run at every open. Brings a database written by the first layout (a zset
 * per op and state, counts taken with ZCARD) to this one: each op's counts
 * hash is filled from those zsets, and the queued and running zsets, which
 * nothing keeps up to date any more, are deleted; the done, failed and dead
 * zsets are the same keys in both. Workers of the first layout must be
 * stopped before workers of this one start. Returns how many ops it moved. */
static const char lua_migrate[] =
    LUA_PRELUDE "if redis.call('GET', P .. 'layout') == '2' then return 0 end\n"
                "local n = 0\n"
                "for _, op in ipairs(redis.call('SMEMBERS', P .. 'ops')) do\n"
                "  if redis.call('EXISTS', ckey(op)) == 0 then\n"
                "    for _, st in ipairs({'queued', 'running', 'done', 'failed', 'dead'}) do\n"
                "      local c = redis.call('ZCARD', skey(op, st))\n"
                "      if c > 0 then redis.call('HSET', ckey(op), st, c) end\n"
                "    end\n"
                "    redis.call('DEL', skey(op, 'queued'), skey(op, 'running'))\n"
                "    n = n + 1\n"
                "  end\n"
                "end\n"
                "redis.call('SET', P .. 'layout', '2')\n"
                "return n\n";

/* ARGV: id. The record (JF order); all nil when there is no such job. */
static const char lua_get[] = LUA_PRELUDE "return record(ARGV[1])\n";

enum {
    SCRIPT_PUBLISH,
    SCRIPT_PULL,
    SCRIPT_EXTEND,
    SCRIPT_FINISH,
    SCRIPT_RETRY,
    SCRIPT_RELEASE,
    SCRIPT_REQUEUE,
    SCRIPT_REQUEUE_DEAD,
    SCRIPT_COUNTS,
    SCRIPT_LIST,
    SCRIPT_GET,
    SCRIPT_MIGRATE,
    SCRIPT_COUNT_
};

static const char *const script_text[SCRIPT_COUNT_] = {
    lua_publish, lua_pull,         lua_extend, lua_finish, lua_retry, lua_release,
    lua_requeue, lua_requeue_dead, lua_counts, lua_list,   lua_get,   lua_migrate,
};

/* ---- the handle and its connection pool --------------------------------- */

typedef struct redis_queue {
    char url[512];
    char host[256];
    int port;
    int db;
    char consumer[256];
    int max_attempts;
    int64_t lease_ms;
    /* SHA1 of each script, from SCRIPT LOAD at open; the text is fixed, so
     * the digest stays valid across Redis restarts even when the script
     * cache does not (EVALSHA then answers NOSCRIPT and we EVAL). */
    char sha[SCRIPT_COUNT_][48];
    pthread_mutex_t mu;
    redisContext *idle[REDIS_POOL_MAX];
    size_t n_idle;
} redis_queue;

static struct timeval
ms_to_timeval(int64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

static imagen_error *
unavailable(const redis_queue *q, const char *cause)
{
    return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "queue redis at %s:%d is unavailable: %s", q->host, q->port,
                            cause != NULL && cause[0] != '\0' ? cause : "connection lost");
}

static imagen_error *
conn_take(redis_queue *q, redisContext **out)
{
    pthread_mutex_lock(&q->mu);
    redisContext *c = q->n_idle > 0 ? q->idle[--q->n_idle] : NULL;
    pthread_mutex_unlock(&q->mu);
    if (c != NULL) {
        *out = c;
        return NULL;
    }
    c = redisConnectWithTimeout(q->host, q->port, ms_to_timeval(REDIS_CONNECT_TIMEOUT_MS));
    if (c == NULL)
        return &imagen__error_out_of_memory;
    if (c->err) {
        imagen_error *err = unavailable(q, c->errstr);
        redisFree(c);
        return err;
    }
    if (q->db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", q->db);
        const char *argv[] = {"SELECT", db};
        redisSetTimeout(c, ms_to_timeval(REDIS_COMMAND_SLACK_MS));
        redisReply *r = redisCommandArgv(c, 2, argv, NULL);
        imagen_error *err = NULL;
        if (r == NULL)
            err = unavailable(q, c->errstr);
        else if (r->type == REDIS_REPLY_ERROR)
            err =
                imagen_error_new(IMAGEN_ERR_INVALID_ARG, "queue URL '%s': SELECT %d failed: %s", q->url, q->db, r->str);
        if (r != NULL)
            freeReplyObject(r);
        if (err != NULL) {
            redisFree(c);
            return err;
        }
    }
    *out = c;
    return NULL;
}

/* Gives a context back; one that saw an error (c->err) cannot be trusted to
 * be in step with the server any more and is closed instead. */
static void
conn_give(redis_queue *q, redisContext *c)
{
    if (c == NULL)
        return;
    if (c->err == 0) {
        pthread_mutex_lock(&q->mu);
        if (q->n_idle < REDIS_POOL_MAX) {
            q->idle[q->n_idle++] = c;
            c = NULL;
        }
        pthread_mutex_unlock(&q->mu);
    }
    if (c != NULL)
        redisFree(c);
}

/* ---- argument vectors ---------------------------------------------------- */

typedef struct args {
    size_t n, cap;
    const char **v;
    size_t *len;
    char **owned; /* formatted numbers, freed with the vector */
    size_t n_owned;
    bool oom;
} args;

static void
args_addn(args *a, const char *s, size_t len)
{
    if (a->oom)
        return;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        const char **v = realloc(a->v, cap * sizeof *v);
        if (v != NULL)
            a->v = v;
        size_t *l = realloc(a->len, cap * sizeof *l);
        if (l != NULL)
            a->len = l;
        char **o = realloc(a->owned, cap * sizeof *o);
        if (o != NULL)
            a->owned = o;
        if (v == NULL || l == NULL || o == NULL) {
            a->oom = true;
            return;
        }
        a->cap = cap;
    }
    a->v[a->n] = s;
    a->len[a->n] = len;
    a->n++;
}

static void
args_add(args *a, const char *s)
{
    args_addn(a, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

static void
args_addi(args *a, long long x)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", x);
    char *s = strdup(buf);
    if (s == NULL) {
        a->oom = true;
        return;
    }
    size_t before = a->n;
    args_addn(a, s, strlen(s));
    if (a->n == before) {
        free(s);
        return;
    }
    a->owned[a->n_owned++] = s;
}

static void
args_free(args *a)
{
    for (size_t i = 0; i < a->n_owned; i++)
        free(a->owned[i]);
    free(a->v);
    free(a->len);
    free(a->owned);
    memset(a, 0, sizeof *a);
}

/* ---- commands -------------------------------------------------------------- */

/* Runs one command with an I/O timeout of block_ms plus slack. An I/O
 * failure is UNAVAILABLE (and leaves c->err set so the context is dropped);
 * an error reply is returned as *out for the caller to judge unless it says
 * Redis is still loading its data after a restart, which is UNAVAILABLE too. */
static imagen_error *
command(redis_queue *q, redisContext *c, int64_t block_ms, const args *a, redisReply **out)
{
    *out = NULL;
    if (a->oom)
        return &imagen__error_out_of_memory;
    redisSetTimeout(c, ms_to_timeval(block_ms + REDIS_COMMAND_SLACK_MS));
    redisReply *r = redisCommandArgv(c, (int)a->n, a->v, a->len);
    if (r == NULL)
        return unavailable(q, c->errstr);
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "LOADING", 7) == 0) {
        imagen_error *err = unavailable(q, r->str);
        freeReplyObject(r);
        return err;
    }
    *out = r;
    return NULL;
}

/* Runs script `which` with ARGV = extra (no KEYS): EVALSHA, and EVAL when
 * the server's script cache does not have it (first use after a restart).
 * An error reply becomes INTERNAL naming the script's failure. */
static imagen_error *
run_script(redis_queue *q, redisContext *c, int which, const args *extra, int64_t block_ms, redisReply **out)
{
    *out = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        args a = {0};
        args_add(&a, attempt == 0 ? "EVALSHA" : "EVAL");
        args_add(&a, attempt == 0 ? q->sha[which] : script_text[which]);
        args_add(&a, "0");
        for (size_t i = 0; i < extra->n; i++)
            args_addn(&a, extra->v[i], extra->len[i]);
        if (extra->oom)
            a.oom = true;
        redisReply *r = NULL;
        imagen_error *err = command(q, c, block_ms, &a, &r);
        args_free(&a);
        IMAGEN_RETURN_IF_ERROR(err);
        if (r->type == REDIS_REPLY_ERROR && attempt == 0 && strncmp(r->str, "NOSCRIPT", 8) == 0) {
            freeReplyObject(r);
            continue;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "queue redis at %s:%d: %s", q->host, q->port, r->str);
            freeReplyObject(r);
            return err;
        }
        *out = r;
        return NULL;
    }
    return imagen_error_new(IMAGEN_ERR_INTERNAL, "queue redis at %s:%d: script cache keeps losing script %d", q->host,
                            q->port, which);
}

/* Takes a connection, runs one script, gives the connection back. */
static imagen_error *
script_call(redis_queue *q, int which, const args *extra, redisReply **out)
{
    redisContext *c = NULL;
    IMAGEN_RETURN_IF_ERROR(conn_take(q, &c));
    imagen_error *err = run_script(q, c, which, extra, 0, out);
    conn_give(q, c);
    return err;
}

/* ---- job records ------------------------------------------------------------ */

static bool
reply_is_str(const redisReply *r)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

/* A number field: Lua hands numbers it computed back as integers, and
 * fields it only copied as strings; absent ones are 0. */
static int64_t
field_i64(const redisReply *r)
{
    if (r == NULL)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return (int64_t)r->integer;
    return reply_is_str(r) ? strtoll(r->str, NULL, 10) : 0;
}

/* An owned copy of a text field; absent or empty means none (NULL). */
static bool
field_dup(const redisReply *r, char **dst)
{
    *dst = NULL;
    if (!reply_is_str(r) || r->len == 0)
        return true;
    *dst = malloc(r->len + 1);
    if (*dst == NULL)
        return false;
    memcpy(*dst, r->str, r->len);
    (*dst)[r->len] = '\0';
    return true;
}

/* A job from a record in JF order (the scripts' record()).
 * NOT_FOUND when the record has no id: the job does not exist. */
static imagen_error *
job_from_fields(const redisReply *v, imagen_job **out)
{
    *out = NULL;
    if (v == NULL || v->type != REDIS_REPLY_ARRAY || v->elements < JF_COUNT_)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "queue redis: malformed job record");
    const redisReply *const *f = (const redisReply *const *)v->element;
    if (!reply_is_str(f[JF_ID]) || f[JF_ID]->len == 0)
        return imagen_error_new(IMAGEN_ERR_NOT_FOUND, "job not found");
    if (f[JF_ID]->len >= IMAGEN_JOB_ID_SIZE)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "queue redis: job record has a malformed id '%.40s'",
                                f[JF_ID]->str);
    imagen_job *job = calloc(1, sizeof *job);
    if (job == NULL)
        return &imagen__error_out_of_memory;
    memcpy(job->id, f[JF_ID]->str, f[JF_ID]->len);
    bool ok = field_dup(f[JF_OP], &job->op) && field_dup(f[JF_SPEC], &job->spec) &&
              field_dup(f[JF_CONSUMER], &job->consumer) && field_dup(f[JF_ERROR], &job->error) &&
              field_dup(f[JF_OUTPUT], &job->output) && field_dup(f[JF_TIMINGS], &job->timings);
    if (!ok) {
        imagen_job_free(job);
        return &imagen__error_out_of_memory;
    }
    if (!reply_is_str(f[JF_STATE]) || !imagen_job_state_parse(f[JF_STATE]->str, &job->state)) {
        imagen_error *err = imagen_error_new(IMAGEN_ERR_INTERNAL, "queue redis: job %s has no valid state ('%.20s')",
                                             job->id, reply_is_str(f[JF_STATE]) ? f[JF_STATE]->str : "");
        imagen_job_free(job);
        return err;
    }
    job->attempts = (int)field_i64(f[JF_ATTEMPTS]);
    job->created_ms = field_i64(f[JF_CREATED]);
    job->started_ms = field_i64(f[JF_STARTED]);
    job->finished_ms = field_i64(f[JF_FINISHED]);
    job->updated_ms = field_i64(f[JF_UPDATED]);
    if (job->op == NULL || job->spec == NULL) {
        imagen_job_free(job);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "queue redis: job record misses op or spec");
    }
    *out = job;
    return NULL;
}

/* ---- driver functions --------------------------------------------------------- */

static imagen_error *
invalid_url(const char *url)
{
    return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "queue URL '%s' is not valid: use redis://host:port[/db]", url);
}

/* redis://host[:port][/db]; the port defaults to 6379 and the db to 0. */
static imagen_error *
parse_url(const char *url, redis_queue *q)
{
    const char *p = url + strlen("redis://");
    size_t host_len = strcspn(p, ":/");
    if (host_len == 0 || host_len >= sizeof q->host || strlen(url) >= sizeof q->url)
        return invalid_url(url);
    memcpy(q->host, p, host_len);
    q->host[host_len] = '\0';
    snprintf(q->url, sizeof q->url, "%s", url);
    p += host_len;
    q->port = 6379;
    q->db = 0;
    if (*p == ':') {
        p++;
        char *end;
        errno = 0;
        long port = strtol(p, &end, 10);
        if (end == p || *p == '-' || *p == '+' || errno != 0 || port < 1 || port > 65535)
            return invalid_url(url);
        q->port = (int)port;
        p = end;
    }
    if (*p == '/') {
        p++;
        if (*p != '\0') {
            char *end;
            errno = 0;
            long db = strtol(p, &end, 10);
            if (end == p || *p == '-' || *p == '+' || errno != 0 || db < 0 || db > INT_MAX || *end != '\0')
                return invalid_url(url);
            q->db = (int)db;
            p = end;
        }
    }
    if (*p != '\0')
        return invalid_url(url);
    return NULL;
}

static void
redis_close(void *state)
{
    redis_queue *q = state;
    if (q == NULL)
        return;
    for (size_t i = 0; i < q->n_idle; i++)
        redisFree(q->idle[i]);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

static imagen_error *
redis_open(const char *url, const imagen_queue_options *options, void **state)
{
    redis_queue *q = calloc(1, sizeof *q);
    if (q == NULL)
        return &imagen__error_out_of_memory;
    pthread_mutex_init(&q->mu, NULL);
    imagen_error *err = parse_url(url, q);
    if (err != NULL) {
        redis_close(q);
        return err;
    }
    snprintf(q->consumer, sizeof q->consumer, "%s", options->consumer);
    q->max_attempts = options->max_attempts;
    q->lease_ms = options->lease_ms;

    /* Connect now so that a wrong address fails at open, and learn the
     * scripts' digests. */
    redisContext *c = NULL;
    err = conn_take(q, &c);
    for (int i = 0; err == NULL && i < SCRIPT_COUNT_; i++) {
        args a = {0};
        args_add(&a, "SCRIPT");
        args_add(&a, "LOAD");
        args_add(&a, script_text[i]);
        redisReply *r = NULL;
        err = command(q, c, 0, &a, &r);
        args_free(&a);
        if (err == NULL && r->type != REDIS_REPLY_STRING)
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "queue redis at %s:%d: SCRIPT LOAD failed: %s", q->host,
                                   q->port, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        if (err == NULL)
            snprintf(q->sha[i], sizeof q->sha[i], "%s", r->str);
        if (r != NULL)
            freeReplyObject(r);
    }
    if (err == NULL) {
        args none = {0};
        redisReply *r = NULL;
        err = run_script(q, c, SCRIPT_MIGRATE, &none, 0, &r);
        if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer > 0)
            imagen_log(IMAGEN_LOG_INFO, "queue",
                       "redis at %s:%d: counts of %lld operation(s) rebuilt from the first layout", q->host, q->port,
                       r->integer);
        if (r != NULL)
            freeReplyObject(r);
    }
    conn_give(q, c);
    if (err != NULL) {
        redis_close(q);
        return err;
    }
    *state = q;
    return NULL;
}

static void
now_arg(args *a)
{
    args_addi(a, (long long)imagen_time_wall_ms());
}

static imagen_error *
redis_publish(void *state, const char *op, const char *const *specs, char (*ids)[IMAGEN_JOB_ID_SIZE], size_t n)
{
    redis_queue *q = state;
    args a = {0};
    args_add(&a, op);
    now_arg(&a);
    for (size_t i = 0; i < n; i++) {
        args_add(&a, ids[i]);
        args_add(&a, specs[i]);
    }
    redisReply *r = NULL;
    imagen_error *err = script_call(q, SCRIPT_PUBLISH, &a, &r);
    args_free(&a);
    if (r != NULL)
        freeReplyObject(r);
    return err;
}

/* Turns the pull script's deliveries into leases. */
static imagen_error *
leases_from_reply(redis_queue *q, const redisReply *list, imagen_lease **leases, size_t *n_out)
{
    int64_t expires = (int64_t)imagen_time_wall_ms() + q->lease_ms;
    for (size_t i = 0; i < list->elements; i++) {
        const redisReply *d = list->element[i];
        if (d->type != REDIS_REPLY_ARRAY || d->elements != 2 || !reply_is_str(d->element[0]))
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "queue redis: malformed delivery from the pull script");
        imagen_lease *lease = calloc(1, sizeof *lease);
        if (lease == NULL)
            return &imagen__error_out_of_memory;
        imagen_error *err = job_from_fields(d->element[1], &lease->job);
        if (err != NULL) {
            free(lease);
            return err;
        }
        snprintf(lease->token, sizeof lease->token, "%s", d->element[0]->str);
        lease->expires_ms = expires;
        leases[(*n_out)++] = lease;
    }
    return NULL;
}

static imagen_error *
redis_pull(void *state, const char *const *ops, size_t n_ops, size_t max, int64_t wait_ms, imagen_lease **leases,
           size_t *n_out)
{
    redis_queue *q = state;
    *n_out = 0;
    uint64_t deadline_ns = imagen_time_now_ns() + (uint64_t)wait_ms * 1000000u;
    redisContext *c = NULL;
    IMAGEN_RETURN_IF_ERROR(conn_take(q, &c));

    /* Tokens are a random prefix per pull plus a sequence number: unique
     * without a round trip. */
    unsigned char rnd[8] = {0};
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        uint64_t t = imagen_time_now_ns();
        memcpy(rnd, &t, sizeof rnd);
    }
    imagen_error *err = NULL;
    int stale_rounds = 0;
    for (;;) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
                 rnd[5], rnd[6], rnd[7]);
        rnd[0]++; /* a fresh prefix for the next round of this call */
        if (rnd[0] == 0)
            rnd[1]++;
        args a = {0};
        args_add(&a, q->consumer);
        args_addi(&a, (long long)q->lease_ms);
        args_addi(&a, (long long)max);
        now_arg(&a);
        args_addi(&a, q->max_attempts);
        args_add(&a, prefix);
        for (size_t i = 0; i < n_ops; i++)
            args_add(&a, ops[i]);
        redisReply *r = NULL;
        err = run_script(q, c, SCRIPT_PULL, &a, 0, &r);
        args_free(&a);
        if (err != NULL)
            break;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 || r->element[0]->type != REDIS_REPLY_ARRAY ||
            r->element[2]->type != REDIS_REPLY_ARRAY || r->element[2]->elements != n_ops) {
            freeReplyObject(r);
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "queue redis: malformed reply from the pull script");
            break;
        }
        err = leases_from_reply(q, r->element[0], leases, n_out);
        long long next_due = r->element[1]->type == REDIS_REPLY_INTEGER ? r->element[1]->integer : -1;
        long long stale = r->element[3]->type == REDIS_REPLY_INTEGER ? r->element[3]->integer : 0;
        if (err != NULL || *n_out > 0) {
            freeReplyObject(r);
            break;
        }
        if (stale > 0 && ++stale_rounds < 64) {
            /* Dropped stale entries may hide ready ones behind them. */
            freeReplyObject(r);
            continue;
        }
        uint64_t now_ns = imagen_time_now_ns();
        if (now_ns >= deadline_ns) {
            freeReplyObject(r);
            break;
        }
        int64_t block = (int64_t)((deadline_ns - now_ns) / 1000000u);
        if (block > REDIS_PULL_POLL_MS)
            block = REDIS_PULL_POLL_MS;
        if (next_due >= 0) {
            int64_t until_due = next_due - (int64_t)imagen_time_wall_ms();
            if (until_due < block)
                block = until_due;
        }
        if (block < 1)
            block = 1;
        /* Wait for a new entry in any of the streams after the last one the
         * script saw. A plain XREAD only watches: the delivery itself is
         * made by the script on the next round, atomically with the job's
         * record. */
        args w = {0};
        args_add(&w, "XREAD");
        args_add(&w, "BLOCK");
        args_addi(&w, (long long)block);
        args_add(&w, "STREAMS");
        for (size_t i = 0; i < n_ops; i++) {
            char key[16 + IMAGEN_QUEUE_OP_MAX];
            snprintf(key, sizeof key, "imagen:q:%s", ops[i]);
            char *copy = strdup(key);
            if (copy == NULL) {
                w.oom = true;
                break;
            }
            size_t before = w.n;
            args_add(&w, copy);
            if (w.n == before) {
                free(copy);
                break;
            }
            w.owned[w.n_owned++] = copy;
        }
        for (size_t i = 0; i < n_ops; i++)
            args_add(&w, reply_is_str(r->element[2]->element[i]) ? r->element[2]->element[i]->str : "0-0");
        redisReply *wr = NULL;
        err = command(q, c, block, &w, &wr);
        args_free(&w);
        freeReplyObject(r); /* after the XREAD: its ids are borrowed from r */
        if (wr != NULL)
            freeReplyObject(wr);
        if (err != NULL)
            break;
    }
    conn_give(q, c);
    if (err != NULL) {
        /* Deliveries already marked running simply expire and come back. */
        for (size_t i = 0; i < *n_out; i++)
            imagen_lease_free(leases[i]);
        *n_out = 0;
    }
    return err;
}

/* Maps a lease script's answer for one delivery: "LOST" is NOT_FOUND, as
 * the contract says. */
static imagen_error *
lease_answer(const imagen_lease *lease, const redisReply *r)
{
    if (reply_is_str(r) && strcmp(r->str, "LOST") == 0)
        return imagen_error_new(IMAGEN_ERR_NOT_FOUND, "lease on job %s was lost", lease->job->id);
    return NULL;
}

/* lease_answer() of a whole reply, which it frees. */
static imagen_error *
lease_result(const imagen_lease *lease, redisReply *r)
{
    imagen_error *err = lease_answer(lease, r);
    freeReplyObject(r);
    return err;
}

static imagen_error *
redis_extend(void *state, imagen_lease *lease)
{
    redis_queue *q = state;
    args a = {0};
    args_add(&a, lease->job->id);
    args_add(&a, lease->token);
    args_add(&a, q->consumer);
    int64_t now = (int64_t)imagen_time_wall_ms();
    redisReply *r = NULL;
    imagen_error *err = script_call(q, SCRIPT_EXTEND, &a, &r);
    args_free(&a);
    IMAGEN_RETURN_IF_ERROR(err);
    IMAGEN_RETURN_IF_ERROR(lease_result(lease, r));
    lease->expires_ms = now + q->lease_ms;
    return NULL;
}

/* Ends n deliveries with one finish script: done (output) or failed
 * (message); per[i] gets each one's result. */
static imagen_error *
finish(redis_queue *q, imagen_lease *const *leases, size_t n, const char *st, const char *const *outputs,
       const char *message, const char *const *timings, imagen_error **per)
{
    args a = {0};
    now_arg(&a);
    for (size_t i = 0; i < n; i++) {
        args_add(&a, leases[i]->job->id);
        args_add(&a, leases[i]->token);
        args_add(&a, st);
        args_add(&a, outputs != NULL ? outputs[i] : NULL);
        args_add(&a, message);
        args_add(&a, timings != NULL ? timings[i] : NULL);
    }
    redisReply *r = NULL;
    imagen_error *err = script_call(q, SCRIPT_FINISH, &a, &r);
    args_free(&a);
    IMAGEN_RETURN_IF_ERROR(err);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        freeReplyObject(r);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "queue redis: malformed reply from the finish script");
    }
    for (size_t i = 0; i < n; i++)
        per[i] = lease_answer(leases[i], r->element[i]);
    freeReplyObject(r);
    return NULL;
}

static imagen_error *
finish_one(redis_queue *q, imagen_lease *lease, const char *st, const char *output, const char *message,
           const char *timings)
{
    imagen_error *per = NULL;
    IMAGEN_RETURN_IF_ERROR(finish(q, &lease, 1, st, &output, message, &timings, &per));
    return per;
}

static imagen_error *
redis_ack(void *state, imagen_lease *lease, const char *output, const char *timings)
{
    return finish_one(state, lease, "done", output, NULL, timings);
}

static imagen_error *
redis_ack_batch(void *state, imagen_lease *const *leases, size_t n, const char *const *outputs,
                const char *const *timings, imagen_error **errs)
{
    return finish(state, leases, n, "done", outputs, NULL, timings, errs);
}

static imagen_error *
redis_fail(void *state, imagen_lease *lease, const char *message, const char *timings)
{
    return finish_one(state, lease, "failed", NULL, message, timings);
}

static imagen_error *
redis_retry(void *state, imagen_lease *lease, const char *message, int64_t delay_ms, bool *dead)
{
    redis_queue *q = state;
    int64_t now = (int64_t)imagen_time_wall_ms();
    args a = {0};
    args_add(&a, lease->job->id);
    args_add(&a, lease->token);
    args_addi(&a, (long long)now);
    args_add(&a, message);
    args_addi(&a, (long long)(now + delay_ms));
    args_addi(&a, q->max_attempts);
    args_add(&a, NULL);
    redisReply *r = NULL;
    imagen_error *err = script_call(q, SCRIPT_RETRY, &a, &r);
    args_free(&a);
    IMAGEN_RETURN_IF_ERROR(err);
    *dead = reply_is_str(r) && strcmp(r->str, "DEAD") == 0;
    return lease_result(lease, r);
}

static imagen_error *
redis_release(void *state, imagen_lease *lease)
{
    redis_queue *q = state;
    args a = {0};
    args_add(&a, lease->job->id);
    args_add(&a, lease->token);
    now_arg(&a);
    redisReply *r = NULL;
    imagen_error *err = script_call(q, SCRIPT_RELEASE, &a, &r);
    args_free(&a);
    IMAGEN_RETURN_IF_ERROR(err);
    return lease_result(lease, r);
}

static imagen_error *
redis_get(void *state, const char *id, imagen_job **out)
{
    redis_queue *q = state;
    args a = {0};
    args_add(&a, id);
    redisReply *r = NULL;
    imagen_error *err = script_call(q, SCRIPT_GET, &a, &r);
    args_free(&a);
    IMAGEN_RETURN_IF_ERROR(err);
    err = job_from_fields(r, out);
    freeReplyObject(r);
    if (err != NULL && imagen_error_code_of(err) == IMAGEN_ERR_NOT_FOUND) {
        imagen_error_free(err);
        err = imagen_error_new(IMAGEN_ERR_NOT_FOUND, "job %s not found", id);
    }
    return err;
}

static imagen_error *
redis_list(void *state, const char *op, int state_filter, size_t limit, imagen_job ***jobs, size_t *n)
{
    redis_queue *q = state;
    args a = {0};
    args_add(&a, op);
    args_add(&a, state_filter >= 0 ? imagen_job_state_name((imagen_job_state)state_filter) : NULL);
    args_addi(&a, (long long)limit);
    redisReply *r = NULL;
    imagen_error *err = script_call(q, SCRIPT_LIST, &a, &r);
    args_free(&a);
    IMAGEN_RETURN_IF_ERROR(err);
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "queue redis: malformed reply from the list script");
    }
    imagen_job **list = calloc(r->elements > 0 ? r->elements : 1, sizeof *list);
    if (list == NULL) {
        freeReplyObject(r);
        return &imagen__error_out_of_memory;
    }
    /* A record this driver did not write (a malformed id, no spec) is left
     * out of the listing with a warning rather than failing all of it. */
    size_t count = 0;
    for (size_t i = 0; i < r->elements && err == NULL; i++) {
        err = job_from_fields(r->element[i], &list[count]);
        if (err == NULL) {
            count++;
        } else if (err != &imagen__error_out_of_memory) {
            imagen_log(IMAGEN_LOG_WARNING, "queue", "listing jobs: %s", imagen_error_message(err));
            imagen_error_free(err);
            err = NULL;
        }
    }
    freeReplyObject(r);
    if (err != NULL) {
        imagen_job_list_free(list, count);
        return err;
    }
    *jobs = list;
    *n = count;
    return NULL;
}

static imagen_error *
redis_requeue(void *state, const char *id)
{
    redis_queue *q = state;
    args a = {0};
    args_add(&a, id);
    now_arg(&a);
    redisReply *r = NULL;
    imagen_error *err = script_call(q, SCRIPT_REQUEUE, &a, &r);
    args_free(&a);
    IMAGEN_RETURN_IF_ERROR(err);
    if (!reply_is_str(r))
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "queue redis: malformed reply from the requeue script");
    else if (strcmp(r->str, "NOTFOUND") == 0)
        err = imagen_error_new(IMAGEN_ERR_NOT_FOUND, "job %s not found", id);
    else if (strcmp(r->str, "OK") != 0)
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "job %s is %s: only failed or dead jobs can be requeued", id,
                               r->str);
    freeReplyObject(r);
    return err;
}

static imagen_error *
redis_requeue_dead(void *state, const char *op, size_t *n)
{
    redis_queue *q = state;
    args a = {0};
    now_arg(&a);
    args_add(&a, op);
    redisReply *r = NULL;
    imagen_error *err = script_call(q, SCRIPT_REQUEUE_DEAD, &a, &r);
    args_free(&a);
    IMAGEN_RETURN_IF_ERROR(err);
    *n = r->type == REDIS_REPLY_INTEGER && r->integer > 0 ? (size_t)r->integer : 0;
    freeReplyObject(r);
    return NULL;
}

static imagen_error *
redis_counts(void *state, imagen_queue_counts **counts, size_t *n)
{
    redis_queue *q = state;
    args a = {0};
    redisReply *r = NULL;
    imagen_error *err = script_call(q, SCRIPT_COUNTS, &a, &r);
    args_free(&a);
    IMAGEN_RETURN_IF_ERROR(err);
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "queue redis: malformed reply from the counts script");
    }
    imagen_queue_counts *out = calloc(r->elements > 0 ? r->elements : 1, sizeof *out);
    if (out == NULL) {
        freeReplyObject(r);
        return &imagen__error_out_of_memory;
    }
    size_t m = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *row = r->element[i];
        if (row->type != REDIS_REPLY_ARRAY || row->elements != 6 || !reply_is_str(row->element[0]))
            continue;
        snprintf(out[m].op, sizeof out[m].op, "%s", row->element[0]->str);
        uint64_t *fields[5] = {&out[m].queued, &out[m].running, &out[m].done, &out[m].failed, &out[m].dead};
        for (int k = 0; k < 5; k++)
            *fields[k] = row->element[k + 1]->type == REDIS_REPLY_INTEGER && row->element[k + 1]->integer > 0
                             ? (uint64_t)row->element[k + 1]->integer
                             : 0;
        m++;
    }
    freeReplyObject(r);
    *counts = out;
    *n = m;
    return NULL;
}

const imagen_queue_driver imagen_queue_driver_redis = {
    .name = "redis",
    .scheme = "redis://",
    .open = redis_open,
    .close = redis_close,
    .publish = redis_publish,
    .pull = redis_pull,
    .extend = redis_extend,
    .ack = redis_ack,
    .ack_batch = redis_ack_batch,
    .fail = redis_fail,
    .retry = redis_retry,
    .release = redis_release,
    .get = redis_get,
    .list = redis_list,
    .requeue = redis_requeue,
    .requeue_dead = redis_requeue_dead,
    .counts = redis_counts,
};
