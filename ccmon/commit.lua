-- One batch, applied atomically: fence on the partition offsets, then counters, entity
-- states, queue names, sorted sets, expiries (last, so keys created here get theirs) and the
-- new offsets. Returns {} on success, or the offset fields whose stored value differs from
-- what the worker expected; nothing is written then.
-- ARGV[1] is one MessagePack array (packing it is C work for the worker, not per-argument Python);
-- binary values (entity states) follow as ARGV[2..], because Redis 6.2's cmsgpack has no bin type.
-- The array holds offsets_key, then sections, each a count followed by its items:
--   offsets (field, expected, new) | hincrby (key, field, delta) | hset (key, field, value)
--   hset of a binary value (key, field, index into ARGV)
--   hdel (key, field) | sadd (key, member) | zrem (key, member) | zadd (key, member, score)
--   expireat (key, ts)
-- then the channel to PUBLISH "committed" on (the alert evaluator listens there).
local RAW = ARGV
local ARGV = cmsgpack.unpack(RAW[1])
local offsets = ARGV[1]
local n = tonumber(ARGV[2])
local bad = {}
local i = 3
for _ = 1, n do
  local cur = redis.call('HGET', offsets, ARGV[i]) or '-1'
  if cur ~= tostring(ARGV[i + 1]) then bad[#bad + 1] = ARGV[i] end
  i = i + 3
end
if #bad > 0 then return bad end
i = 3
for _ = 1, n do
  redis.call('HSET', offsets, ARGV[i], ARGV[i + 2])
  i = i + 3
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HINCRBY', ARGV[i], ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HSET', ARGV[i], ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HSET', ARGV[i], ARGV[i + 1], RAW[ARGV[i + 2]])
  i = i + 3
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HDEL', ARGV[i], ARGV[i + 1])
  i = i + 2
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('SADD', ARGV[i], ARGV[i + 1])
  i = i + 2
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('ZREM', ARGV[i], ARGV[i + 1])
  i = i + 2
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('ZADD', ARGV[i], ARGV[i + 2], ARGV[i + 1])
  i = i + 3
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('EXPIREAT', ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('PUBLISH', ARGV[i], 'committed')
return {}
