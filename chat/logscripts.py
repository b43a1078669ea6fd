"""The message log's Lua scripts (run by EVALSHA; Redis 6.2 commands only).

Field and kind names of the events they store and publish come from
``chat.events``; key names from ``chat.messagelog``.
"""

from __future__ import annotations

# KEYS: seq, stream, dedup, channel, bucket, rooms, epoch, gone (the room's deleted message seqs)
# ARGV: epoch/known (the epoch the caller validated, '/', the highest seq it has seen), ttl, has_dedup,
#       room_id, slug, burst ('' = no limit), per_second,
#       guard ('' none | 'live': the seq ARGV[9] must not be deleted | 'take': the same, then mark it deleted),
#       the guarded seq, then the entry's own fields as name, value pairs (chat.events.message_fields:
#       the script does not know their names)
# -> {1, seq, ts} appended | {0, seq, ts} a duplicate of that one | {-1, 0, 0} the room's state is not the
#    epoch the caller validated (Redis lost it, another process re-seeded it, or the counter is below a
#    seq the caller has seen: Redis was restored from an older copy): validate again
#    | {-2, retry_after_ms, 0} rate limited | {-3, 0, 0} the guarded message is deleted (protocol.md 7.4)
# A duplicate and a refused epoch take no token: the retry that follows is the same send.
# The bucket refills by the time elapsed on Redis's own clock, so the processes' clocks do not matter.
# The guard makes edits, deletions and replies of a message being deleted exact: of two racing
# deletions one is appended and the other refused, in one atomic step.
# The token bucket rule (a Lua function, prefixed to the scripts that take a token: APPEND here,
# chat.clusterlog.TAKE on a cluster): take_token(bucket key, burst, tokens per ms, now in ms) -> 0 a
# token taken | the ms until one is back (nothing taken). The bucket refills by the time elapsed.
TAKE_TOKEN = """
local function take_token(key, burst, rate, now)
  local data = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(data[1])
  local last = tonumber(data[2])
  if tokens == nil or last == nil then
    tokens = burst
    last = now
  end
  tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
  local wait = 0
  if tokens >= 1 then
    tokens = tokens - 1
  else
    wait = math.ceil((1 - tokens) / rate)
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(burst / rate) + 1000)
  return wait
end
"""

# The epoch key exists only while the room's state is valid (protocol.md 7.1; chat.epochs seeds it):
# checking it here is what makes every append validate the room's state without a database query.
APPEND = (
    TAKE_TOKEN
    + """
local sep = string.find(ARGV[1], '/', 1, true)
local epoch = string.sub(ARGV[1], 1, sep - 1)
local counter = redis.call('GET', KEYS[1])
if redis.call('GET', KEYS[7]) ~= epoch or not counter or tonumber(counter) < tonumber(string.sub(ARGV[1], sep + 1)) then
  return {-1, 0, 0}
end
if ARGV[3] == '1' then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    -- A write (same TTL): WAIT after this answer (KAIWA_ACK_REPLICAS) counts up to this connection's
    -- last write, and replication is in order, so a confirmed WAIT covers the original message too,
    -- whatever offset a Redis version gives a connection that only read.
    local ttl = redis.call('PTTL', KEYS[3])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[3], ttl) end
    local sep = string.find(seen, ':', 1, true)
    return {0, tonumber(string.sub(seen, 1, sep - 1)), tonumber(string.sub(seen, sep + 1))}
  end
end
if ARGV[8] ~= '' and redis.call('SISMEMBER', KEYS[8], ARGV[9]) == 1 then
  return {-3, 0, 0}
end
local t = redis.call('TIME')
local ts = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[6] ~= '' then
  local wait = take_token(KEYS[5], tonumber(ARGV[6]), tonumber(ARGV[7]) / 1000, ts)
  if wait > 0 then
    return {-2, wait, 0}
  end
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], 'persist', '0', 'MKSTREAM')
end
redis.call('SADD', KEYS[6], ARGV[4])
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], '0-' .. seq, 'ts', ts, 'ep', epoch, unpack(ARGV, 10))
if ARGV[8] == 'take' then
  redis.call('SADD', KEYS[8], ARGV[9])
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[3], seq .. ':' .. ts, 'EX', ARGV[2])
end
local event = {k = 'm', rid = tonumber(ARGV[4]), room = ARGV[5], seq = seq, ts = ts, ep = epoch}
for i = 10, #ARGV, 2 do
  event[ARGV[i]] = ARGV[i + 1]
end
redis.call('PUBLISH', KEYS[4], cjson.encode(event))
return {1, seq, ts}
"""
)

# KEYS: seq, epoch, channel
# ARGV: the epoch the caller found ('' = none), the new epoch, floor, room_id, slug
# -> {1, new epoch, base} seeded | {0, epoch, seq} the room's epoch is no longer the one the caller found
# A compare-and-set, so two processes seeding one room agree on one epoch. The new epoch starts
# above the floor and above the counter, whatever is left of it: seqs never go back. The epoch event
# tells every process's hub (chat.events EPOCH) before any message of the new epoch is published.
SEED = """
local current = redis.call('GET', KEYS[2]) or ''
if current ~= ARGV[1] then
  return {0, current, tonumber(redis.call('GET', KEYS[1]) or '0')}
end
local base = tonumber(ARGV[3])
local counter = tonumber(redis.call('GET', KEYS[1]) or '0')
if counter > base then base = counter end
redis.call('SET', KEYS[1], string.format('%d', base))
redis.call('SET', KEYS[2], ARGV[2])
local event = {k = 'e', rid = tonumber(ARGV[4]), room = ARGV[5], ep = ARGV[2], seq = base}
redis.call('PUBLISH', KEYS[3], cjson.encode(event))
return {1, ARGV[2], base}
"""

# KEYS: stream, seq   ARGV: keep
# Trims below the oldest entry the persist group has not acknowledged, and
# keeps at most ``keep`` persisted entries for fast resumes.
TRIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then return 0 end
local delivered = nil
for _, g in ipairs(groups) do
  local name, last = nil, nil
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  if name == 'persist' then delivered = last end
end
if not delivered then return 0 end
local safe = tonumber(string.sub(delivered, string.find(delivered, '-', 1, true) + 1)) + 1
local pending = redis.call('XPENDING', KEYS[1], 'persist')
if pending[2] then
  local lo = pending[2]
  local p = tonumber(string.sub(lo, string.find(lo, '-', 1, true) + 1))
  if p < safe then safe = p end
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local keep_from = last - tonumber(ARGV[1]) + 1
if keep_from < safe then safe = keep_from end
if safe <= 1 then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', '0-' .. safe)
"""


# KEYS: stream   ARGV: min idle ms, consumer name ('' for any)
# Removes consumers of the persist group that hold no pending entry: the named
# one (a worker that stopped cleanly), or any idle that long (workers that were
# killed). Atomic, so a consumer cannot be handed entries between the check
# and the removal (XGROUP DELCONSUMER drops its pending entries).
FORGET = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], 'persist')
if not ok then return 0 end
local removed = 0
for _, c in ipairs(consumers) do
  local name, pending, idle = nil, -1, -1
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1] end
    if c[i] == 'pending' then pending = c[i + 1] end
    if c[i] == 'idle' then idle = c[i + 1] end
  end
  local wanted
  if ARGV[2] ~= '' then wanted = (name == ARGV[2]) else wanted = (idle >= tonumber(ARGV[1])) end
  if pending == 0 and wanted then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'persist', name)
    removed = removed + 1
  end
end
return removed
"""
