-- If a topic's id changed (recreated, or a memory-only broker restarted), forget what this
-- store knew of its partitions, atomically, so a second worker cannot reset twice.
-- KEYS: topic_ids hash, offsets hash, then the state hash of each partition.
-- ARGV: topic, new topic id, partition count. Returns 1 when it reset, else 0.
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if not old then return 0 end
for p = 0, tonumber(ARGV[3]) - 1 do
  redis.call('HDEL', KEYS[2], ARGV[1] .. ':' .. p)
end
for k = 3, #KEYS do redis.call('DEL', KEYS[k]) end
return 1
