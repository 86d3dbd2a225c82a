-- Claim the dispatches that are due, for one scheduler to publish.
-- A claimed member moves to a second zset with a deadline; if its scheduler dies before
-- publishing (and removing it), it becomes due again: nothing scheduled is ever lost.
-- KEYS[1] schedule zset, KEYS[2] claimed zset
-- ARGV[1] max members, ARGV[2] claim seconds
-- returns the claimed members
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, m in ipairs(stale) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('ZADD', KEYS[1], now, m)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), m)
end
return due
