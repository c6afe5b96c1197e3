-- One batch, applied atomically: fence on the partition offsets, then counters, entity
-- states, queue names, sorted sets, expiries (last, so keys created here get theirs) and the
-- new offsets. Returns {} on success, or the offset fields whose stored value differs from
-- what the worker expected; nothing is written then.
-- ARGV[1] is one MessagePack array (packing it is C work for the worker, not per-argument Python);
-- ARGV[2] is every entity state blob, concatenated: Redis 6.2's cmsgpack has no bin type, so binary
-- values are cut out of it by (start, length).
-- The array holds offsets_key, then sections, each a count followed by its items:
--   offsets (field, expected, new)
--   hincrby groups (key, n, then n x (field, delta))
--   hset (key, field, value)
--   blob hset groups (key, n, then n x (field, start, length))
--   hdel groups (key, n, then n fields) | sadd groups | zrem groups (the same shape)
--   zadd groups (key, n, then n x (score, member))
--   expireat (key, ts)
-- then the channel to PUBLISH "committed" on (the alert evaluator listens there).
-- Commands that take many items get them in slices: one call per slice, not per item.
local BLOBS = ARGV[2]
local ARGV = cmsgpack.unpack(ARGV[1])
local SLICE = 1000  -- items per variadic call (Lua's unpack is bounded by its C stack)
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

-- Groups of `width`-item entries for one key each; `emit(key, args)` issues one variadic command.
local function groups(width, emit)
  local count = tonumber(ARGV[i]); i = i + 1
  for _ = 1, count do
    local key, m = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
    local args = {}
    for _ = 1, m do
      for w = 0, width - 1 do args[#args + 1] = ARGV[i + w] end
      i = i + width
      if #args >= SLICE * width then emit(key, args); args = {} end
    end
    if #args > 0 then emit(key, args) end
  end
end

n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local key, m = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
  for _ = 1, m do
    redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HSET', ARGV[i], ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
groups(3, function(key, args)
  local pairs_ = {}
  for j = 1, #args, 3 do
    pairs_[#pairs_ + 1] = args[j]
    pairs_[#pairs_ + 1] = string.sub(BLOBS, args[j + 1], args[j + 1] + args[j + 2] - 1)
  end
  redis.call('HSET', key, unpack(pairs_))
end)
groups(1, function(key, args) redis.call('HDEL', key, unpack(args)) end)
groups(1, function(key, args) redis.call('SADD', key, unpack(args)) end)
groups(1, function(key, args) redis.call('ZREM', key, unpack(args)) end)
groups(2, function(key, args) redis.call('ZADD', key, unpack(args)) end)
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('EXPIREAT', ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('PUBLISH', ARGV[i], 'committed')
return {}
