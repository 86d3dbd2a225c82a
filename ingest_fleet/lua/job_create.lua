-- Create a job once per idempotency key; the first dispatch is scheduled in the same step
-- (an outbox: if the submitter dies before publishing, the scheduler publishes it). Shared by
-- the client (ingest_fleet) and the fleet (tasks.jobstore).
-- KEYS[1] idempotency index key, KEYS[2] job key, KEYS[3] jobs zset, KEYS[4] schedule zset,
-- KEYS[5] the account's active-jobs zset (backlog and oldest-job age for `budgets`),
-- KEYS[6] stats: jobs by provider:state, KEYS[7] the events stream
-- ARGV[1] job id, ARGV[2] record JSON, ARGV[3] created-at score, ARGV[4] schedule member,
-- ARGV[5] its delay in seconds, ARGV[6] the stats field (provider:state), ARGV[7] the intent's
-- digest, ARGV[8] provider, ARGV[9] account, ARGV[10] the events stream's cap
-- The idempotency key holds "<job id> <digest>" (a bare job id from before digests: any intent
-- matches it). Returns {1, id, digest} when created, {0, existing id, its digest} otherwise.
local existing = redis.call('GET', KEYS[1])
if existing then
  local sep = string.find(existing, ' ', 1, true)
  if sep then
    return {0, string.sub(existing, 1, sep - 1), string.sub(existing, sep + 1)}
  end
  return {0, existing, ''}
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[7])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[6], ARGV[6], 1)
local t = redis.call('TIME')
redis.call('ZADD', KEYS[4], tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[5]), ARGV[4])
redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[10], '*', 'job_id', ARGV[1], 'state', 'queued',
           'provider', ARGV[8], 'account', ARGV[9])
return {1, ARGV[1], ARGV[7]}
