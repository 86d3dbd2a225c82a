-- Give back a job's slot (or its place among the waiters) and name the waiters to wake.
-- KEYS[1] held zset, KEYS[2] waiters zset, KEYS[3] waiters' dispatch hash, KEYS[4] limit in force
-- ARGV[1] job id, ARGV[2] limit (0 = none) when none is in force yet
-- returns the dispatch members of the waiters that may now take the free slots
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
local limit = tonumber(redis.call('GET', KEYS[4]) or ARGV[2])
local free = limit - redis.call('ZCARD', KEYS[1])
if limit <= 0 or free <= 0 then
  return {}
end
local top = redis.call('ZRANGE', KEYS[2], 0, free - 1)
if #top == 0 then
  return {}
end
return redis.call('HMGET', KEYS[3], unpack(top))
