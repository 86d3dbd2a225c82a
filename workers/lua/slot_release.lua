-- Give back a job's slot (or its place among the waiters) and name the waiters to wake.
-- KEYS[1] held zset, KEYS[2] waiters zset, KEYS[3] waiters' dispatch hash
-- ARGV[1] job id, ARGV[2] limit (0 = none)
-- returns the dispatch members of the waiters that may now take the free slots
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
local limit = tonumber(ARGV[2])
local free = limit - redis.call('ZCARD', KEYS[1])
if limit <= 0 or free <= 0 then
  return {}
end
local top = redis.call('ZRANGE', KEYS[2], 0, free - 1)
if #top == 0 then
  return {}
end
return redis.call('HMGET', KEYS[3], unpack(top))
