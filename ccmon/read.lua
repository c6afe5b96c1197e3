-- Rolling-window sums for the snapshot read (Store.snapshot), for a chunk of queues.
--
-- A queue's rolling windows come from its segment sums, in hashes:
--   ws = ccmon:ws:<queue>
--     '@'      "<width>:<last>:<g0>:<g1>:...": the bucket range the sums cover. g0 >= g1 >= ... are the
--              first buckets of the reader's spans (shortest first); last is the newest bucket.
--     'm|j'    the longest wait in segment j (-1: none); absent when unknown (recomputed from wz)
--   ws:j = ccmon:ws:<queue>:<j>: each counter summed over segment j, the buckets [g_j, g_(j-1) - width]
--        (segment 0 ends at last); the window of span j is segments 0..j. Zero sums are not kept.
--   wz = ccmon:wz:<queue>: '<b>' the longest wait (top score) of bucket b's wait set, for the buckets of
--        the range that have one.
--   ws:j and wz also hold '@', so that a hash lost, or recreated by a commit since, is told apart.
-- Invariant: every field equals its value over the buckets now in its segment. The batch commit keeps
-- it (commit.lua's window-sum section mirrors each bucket increment into the segment holding that bucket,
-- atomically with the increment); this script keeps it when the window slides, by moving the few buckets that
-- change segment (subtract where a bucket leaves, add where it enters), or rebuilds the hashes from
-- the buckets when that is cheaper, when they are missing or foreign, or when a bucket it would
-- subtract, or any bucket of the range, may have expired since it was counted (bucket b expires at
-- b + expire_after on Redis's clock; the range's oldest bucket expires first).
--
-- The reader reads ws and ws:j itself, with plain HGETALLs after this script: Lua's per-element
-- conversions cost Redis more than the reads, so in mode 2 this script only brings each queue's hashes
-- to the requested range.
--
-- ARGV[1]: MessagePack {header, queue...}
--   header: {mode, width, expire_after, ttl}
--     mode 0: sum the buckets, write nothing (a read at another instant, or the commit does not keep sums)
--     mode 2: bring the stored sums to the range, slid or rebuilt (a read now)
--     mode 3: rebuild and store them (a read now found a hash of them lost, or recreated by a commit)
--     ttl: seconds rebuilt hashes live (plus the queue's jitter): the sums are rebuilt from the buckets now
--          and then, and the hashes of a queue that went quiet go
--   queue: {ws key, wz key, bucket key prefix, wait-set key prefix, jitter, range ('@'), last, {g...}}
--     A queue's agents' own fields have buckets and sums of their own (Store._queue_reads), an item like a queue's
--     with the wait-set prefix '': no waits ('m|j' is then -1).
-- Returns per queue, mode 2: 1 when the hashes were rebuilt from the buckets, else 0. Modes 0 and 3: the
-- sums, a flat list of 'j|f' (counter f of segment j) and 'm|j' fields and values.
local P = cmsgpack.unpack(ARGV[1])
local mode, width, expire_after, ttl = P[1][1], P[1][2], P[1][3], P[1][4]
local now = tonumber(redis.call('TIME')[1])
local fmt = string.format
-- A segment hash's placeholder value: longer than hash-max-ziplist-value (64), so that Redis keeps the hash as a
-- table, where each commit's HINCRBY finds its field at once instead of scanning a list of a hundred.
local PLACEHOLDER = string.rep('0', 65)

local function seg_of(last, g, b)
  if b > last then return nil end
  for j = 1, #g do
    if b >= g[j] then return j - 1 end
  end
  return nil
end

-- The bucket range [lo, hi] of segment j (0-based).
local function seg_range(last, g, j)
  if j == 0 then return g[1], last end
  return g[j + 1], g[j] - width
end

local function top(key)
  local t = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
  if t[2] then return tonumber(t[2]) end
  return nil
end

-- Segment j's longest wait from the buckets' longest waits in wz.
local function longest(Q, last, g, j)
  local lo, hi = seg_range(last, g, j)
  local m = -1
  if lo > hi then return m end
  local fields = {}
  for b = lo, hi, width do fields[#fields + 1] = fmt('%d', b) end
  for _, w in ipairs(redis.call('HMGET', Q[2], unpack(fields))) do
    if w then
      w = tonumber(w)
      if w > m then m = w end
    end
  end
  return m
end

-- Sum every bucket of the range into segments, with each bucket's and each segment's longest wait.
local function rebuild(Q, last, g)
  local sums, waits, maxima = {}, {}, {}
  for j = 0, #g - 1 do
    local lo, hi = seg_range(last, g, j)
    local seg = {}
    local m = -1
    for b = lo, hi, width do
      local bs = fmt('%d', b)
      local h = redis.call('HGETALL', Q[3] .. bs)
      for k = 1, #h, 2 do
        local f = h[k]
        seg[f] = (seg[f] or 0) + tonumber(h[k + 1])
      end
      local w = Q[4] ~= '' and top(Q[4] .. bs) or nil
      if w then
        waits[bs] = w
        if w > m then m = w end
      end
    end
    for f, v in pairs(seg) do
      if v == 0 then seg[f] = nil end
    end
    sums[j] = seg
    maxima[j] = m
  end
  return sums, waits, maxima
end

local function hset_all(key, pairs_)
  for k = 1, #pairs_, 2000 do
    redis.call('HSET', key, unpack(pairs_, k, math.min(k + 1999, #pairs_)))
  end
end

local function store_all(Q, g, sums, waits, maxima)
  local at = now + ttl + Q[5]
  local args = {'@', Q[6]}
  for j, m in pairs(maxima) do
    args[#args + 1] = 'm|' .. j
    args[#args + 1] = fmt('%d', m)
  end
  redis.call('DEL', Q[1])
  hset_all(Q[1], args)
  redis.call('EXPIREAT', Q[1], at)
  for j = 0, #g - 1 do
    local key = Q[1] .. ':' .. j
    args = {'@', PLACEHOLDER}
    for f, v in pairs(sums[j]) do
      args[#args + 1] = f
      args[#args + 1] = fmt('%d', v)
    end
    redis.call('DEL', key)
    hset_all(key, args)
    redis.call('EXPIREAT', key, at)
  end
  args = {'@', '1'}
  for bs, w in pairs(waits) do
    args[#args + 1] = bs
    args[#args + 1] = fmt('%d', w)
  end
  redis.call('DEL', Q[2])
  hset_all(Q[2], args)
  redis.call('EXPIREAT', Q[2], at)
end

-- Move the buckets whose segment differs between the stored range and the requested one, in place.
-- Returns false when a rebuild is due instead.
local function slide(Q, last, g, meta)
  local ws, wz = Q[1], Q[2]
  local s = {}
  for x in string.gmatch(meta, '[^:]+') do s[#s + 1] = tonumber(x) end
  if s[1] ~= width or #s ~= #g + 2 then return false end
  local slast, sg = s[2], {}
  for j = 3, #s do sg[j - 2] = s[j] end
  local n = (last - g[#g]) / width + 1  -- buckets in the requested range: what a rebuild reads
  local lo, hi = math.min(sg[#sg], g[#g]), math.max(slast, last)
  if (hi - lo) / width >= 2 * n then return false end
  local moves = {}
  for b = lo, hi, width do
    local o, m = seg_of(slast, sg, b), seg_of(last, g, b)
    if o ~= m then
      if o and b + expire_after <= now + 2 then return false end  -- it may have expired: its sum is unknown
      moves[#moves + 1] = {b, o, m}
      if #moves >= n then return false end
    end
  end
  local maxima, dirty = {}, {}
  for j = 0, #g - 1 do
    local m = redis.call('HGET', ws, 'm|' .. j)
    if m then maxima[j] = tonumber(m) end
  end
  local delta = {}
  for j = 0, #g - 1 do delta[j] = {} end
  for _, mv in ipairs(moves) do
    local b, o, m = mv[1], mv[2], mv[3]
    local bs = fmt('%d', b)
    local h = redis.call('HGETALL', Q[3] .. bs)
    for k = 1, #h, 2 do
      local v = tonumber(h[k + 1])
      if o then
        local d = delta[o]
        d[h[k]] = (d[h[k]] or 0) - v
      end
      if m then
        local d = delta[m]
        d[h[k]] = (d[h[k]] or 0) + v
      end
    end
    local w
    if o then
      w = redis.call('HGET', wz, bs)
      w = w and tonumber(w)
      if w and w == maxima[o] then dirty[o] = true end
    elseif Q[4] ~= '' then
      w = top(Q[4] .. bs)
    end
    if m == nil then
      if w then redis.call('HDEL', wz, bs) end
    else
      if o == nil and w then redis.call('HSET', wz, bs, fmt('%d', w)) end
      if w and maxima[m] and w > maxima[m] then maxima[m] = w end
    end
  end
  for j = 0, #g - 1 do
    local key = ws .. ':' .. j
    for f, d in pairs(delta[j]) do
      if d ~= 0 and redis.call('HINCRBY', key, f, fmt('%d', d)) == 0 then redis.call('HDEL', key, f) end
    end
  end
  redis.call('HSET', ws, '@', Q[6])
  for j = 0, #g - 1 do
    if dirty[j] or maxima[j] == nil then maxima[j] = longest(Q, last, g, j) end
    redis.call('HSET', ws, 'm|' .. j, fmt('%d', maxima[j]))
  end
  return true
end

local out = {}
for qi = 2, #P do
  local Q = P[qi]
  local last, g = Q[7], Q[8]
  local result = 0
  if mode == 2 then
    local fields = {'@'}
    for j = 0, #g - 1 do fields[#fields + 1] = 'm|' .. j end
    local h = redis.call('HMGET', Q[1], unpack(fields))
    if g[#g] + expire_after <= now + 2 or not redis.call('HGET', Q[2], '@') then
      -- The range's oldest buckets may have expired (the reader's clock lags Redis's), so stored sums may still
      -- count them; or the longest waits are lost. Sum what is there.
      store_all(Q, g, rebuild(Q, last, g))
      result = 1
    elseif h[1] == Q[6] then
      for j = 0, #g - 1 do  -- already at the range (most reads); only refresh a segment's unknown longest wait
        if not h[j + 2] then redis.call('HSET', Q[1], 'm|' .. j, fmt('%d', longest(Q, last, g, j))) end
      end
    elseif not (h[1] and slide(Q, last, g, h[1])) then
      store_all(Q, g, rebuild(Q, last, g))
      result = 1
    end
  else
    local sums, waits, maxima = rebuild(Q, last, g)
    if mode == 3 then store_all(Q, g, sums, waits, maxima) end
    result = {}
    for j, m in pairs(maxima) do
      result[#result + 1] = 'm|' .. j
      result[#result + 1] = fmt('%d', m)
      for f, v in pairs(sums[j]) do
        result[#result + 1] = j .. '|' .. f
        result[#result + 1] = fmt('%d', v)
      end
    end
  end
  out[#out + 1] = result
end
return out
