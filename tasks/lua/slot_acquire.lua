-- Take a provider-side job slot for a job, or join the queue of waiters.
-- A free slot goes to a waiter before any newcomer (waiters are ordered by priority, then
-- age), so a job that waited is never overtaken by one that did not.
-- KEYS[1] held zset (job -> since), KEYS[2] waiters zset (job -> score),
-- KEYS[3] waiters' dispatch hash (job -> schedule member to wake it with),
-- KEYS[4] the limit in force (kept for releases by processes configured otherwise)
-- ARGV[1] job id, ARGV[2] limit (0 = none), ARGV[3] waiter score, ARGV[4] dispatch member
-- returns 1 held, 0 waiting
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 1
end
local t = redis.call('TIME')
local limit = tonumber(ARGV[2])
redis.call('SET', KEYS[4], limit)
local free = limit - redis.call('ZCARD', KEYS[1])
if limit <= 0 or free > 0 then
  local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
  if limit <= 0 or redis.call('ZCARD', KEYS[2]) == 0 or (rank and rank < free) then
    redis.call('ZADD', KEYS[1], t[1], ARGV[1])
    redis.call('ZREM', KEYS[2], ARGV[1])
    redis.call('HDEL', KEYS[3], ARGV[1])
    return 1
  end
end
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
return 0
