-- Create a job once per idempotency key; the first dispatch is scheduled in the same step
-- (an outbox: if the submitter dies before publishing, the scheduler publishes it).
-- KEYS[1] idempotency index key, KEYS[2] job key, KEYS[3] jobs zset, KEYS[4] schedule zset,
-- KEYS[5] the account's active-jobs zset (backlog and oldest-job age for `budgets`)
-- ARGV[1] job id, ARGV[2] record JSON, ARGV[3] created-at score, ARGV[4] schedule member,
-- ARGV[5] its delay in seconds; KEYS[6] stats: jobs by provider:state, ARGV[6] its field
-- returns {1, id} when created, {0, existing id} when the key was already used
local existing = redis.call('GET', KEYS[1])
if existing then
  return {0, existing}
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[6], ARGV[6], 1)
local t = redis.call('TIME')
redis.call('ZADD', KEYS[4], tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[5]), ARGV[4])
return {1, ARGV[1]}
