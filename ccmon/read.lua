-- Bulk read for the snapshot: one script call instead of one command per key.
-- KEYS: the keys; ARGV[1]: one op letter per key:
--   h  HGETALL (flat field/value list)
--   m  the highest score of a sorted set ('' when empty)
--   s  every score of a sorted set (members are not needed)
local ops = ARGV[1]
local out = {}
for i, key in ipairs(KEYS) do
  local op = string.sub(ops, i, i)
  if op == 'h' then
    out[i] = redis.call('HGETALL', key)
  elseif op == 'm' then
    local top = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
    out[i] = top[2] or ''
  else
    local all = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    local scores = {}
    for j = 2, #all, 2 do scores[#scores + 1] = all[j] end
    out[i] = scores
  end
end
return out
