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
--   the window-sum section (below; Store.window_sum_args)
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
-- ccmon:window-sums v1 (a section of commit.lua; Store.window_sum_args builds its arguments)
-- Keeps the readers' rolling-window segment sums (ccmon:ws:<queue>[:<j>] and ccmon:wz:<queue>, read.lua)
-- equal to their buckets: each bucket increment of this batch is added to the segment that holds the
-- bucket in the stored range, if any, and each touched wait set's longest wait is refreshed there.
-- Runs after the increments, sorted-set writes and expiries above. A bucket whose expiry has passed
-- is gone already (EXPIREAT in the past deletes): it counts nowhere, so nothing is mirrored for it.
-- Section: a count, the seconds after its start at which a bucket expires, then per touched bucket
--   ws key, wz key, bucket, wait-set key ('' when the batch did not touch it), field count, (field, delta)...
n = tonumber(ARGV[i]); i = i + 1
local expire_after = tonumber(ARGV[i]); i = i + 1
local now = n > 0 and tonumber(redis.call('TIME')[1]) or 0
local ws_ranges, ws_sums, ws_waits = {}, {}, {}
for _ = 1, n do
  local ws, wz, b, zw, nf = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], tonumber(ARGV[i + 4])
  i = i + 5
  local r = ws_ranges[ws]
  if r == nil then
    r = false
    local meta = redis.call('HGET', ws, '@')
    if meta then
      r = {}
      for x in string.gmatch(meta, '[^:]+') do r[#r + 1] = tonumber(x) end
    end
    ws_ranges[ws] = r
  end
  local seg = nil
  if r and b <= r[2] and b + expire_after > now then
    for j = 3, #r do
      if b >= r[j] then seg = j - 3; break end
    end
  end
  if seg then
    -- Summed per segment first: a batch's buckets often share one, and one HINCRBY per field is the cost.
    local key = ws .. ':' .. seg
    local acc = ws_sums[key]
    if acc == nil then acc = {}; ws_sums[key] = acc end
    for k = i, i + 2 * nf - 1, 2 do acc[ARGV[k]] = (acc[ARGV[k]] or 0) + ARGV[k + 1] end
    if zw ~= '' then ws_waits[#ws_waits + 1] = {ws, wz, b, zw, seg} end
  end
  i = i + 2 * nf
end
for key, acc in pairs(ws_sums) do
  for f, d in pairs(acc) do
    if d ~= 0 and redis.call('HINCRBY', key, f, string.format('%d', d)) == 0 then redis.call('HDEL', key, f) end
  end
end
-- Each touched bucket's longest wait, and its segment's ('m|j', -1 for none; absent when unknown: the reader then
-- recomputes it from the buckets' longest waits in wz).
for _, t in ipairs(ws_waits) do
  local ws, wz, zw, seg = t[1], t[2], t[4], t[5]
  local bs = string.format('%d', t[3])
  local old = tonumber(redis.call('HGET', wz, bs) or '-1')
  local top = redis.call('ZREVRANGE', zw, 0, 0, 'WITHSCORES')
  local new = -1
  if top[2] then
    new = tonumber(top[2])
    redis.call('HSET', wz, bs, top[2])
  else
    redis.call('HDEL', wz, bs)
  end
  local mf = 'm|' .. seg
  local m = redis.call('HGET', ws, mf)
  if m then
    m = tonumber(m)
    if new > m then redis.call('HSET', ws, mf, string.format('%d', new))
    elseif new < old and old == m then redis.call('HDEL', ws, mf) end
  end
end
redis.call('PUBLISH', ARGV[i], 'committed')
return {}
