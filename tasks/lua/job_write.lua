-- Fenced write of a job record, optionally with one dispatch put in the schedule.
-- Only the holder of the newest fencing token may write: a stale holder (its lease
-- expired and another worker took the job) is refused and cannot overwrite progress.
-- KEYS[1] job key, KEYS[2] fence counter, KEYS[3] lease key, KEYS[4] schedule zset
-- ARGV[1] token, ARGV[2] record JSON, ARGV[3] lease ttl ms, ARGV[4] '1' release lease,
-- ARGV[5] schedule member ('' for none), ARGV[6] its delay in seconds
-- KEYS[5] stats: jobs by provider:state, KEYS[6] stats: finished by provider:state,
-- KEYS[7] stats: bytes uploaded by provider:account (the metrics exporter reads them)
-- ARGV[7] provider, ARGV[8] account, ARGV[9] new state, ARGV[10] new bytes_done
-- KEYS[8] the events stream (a state change is appended), ARGV[11] its cap, ARGV[12] job id
-- KEYS[9] the job's idempotency key, KEYS[10] its kept notifications; ARGV[13] retention (s):
-- a terminal record, its fencing counter, idempotency key and notifications expire that long
-- after its last write (INGEST_JOB_RETENTION); a record that leaves a terminal state keeps them
-- KEYS[11] the start count of the dispatch the lease was taken for; ARGV[14] '1' to delete it
-- (a released lease: that run ended here, not killed outright)
-- returns 1 written, 0 refused (stale token)
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[1]) then
  return 0
end
local old = redis.call('GET', KEYS[1])
local before_state, before_bytes = nil, 0
if old then
  local record = cjson.decode(old)
  before_state, before_bytes = record.state, tonumber(record.bytes_done) or 0
end
redis.call('SET', KEYS[1], ARGV[2])
local terminal = {ready = true, failed = true, cancelled = true}
if terminal[ARGV[9]] then
  for _, key in ipairs({KEYS[1], KEYS[2], KEYS[9], KEYS[10]}) do
    redis.call('EXPIRE', key, ARGV[13])
  end
elseif terminal[before_state or ''] then
  redis.call('PERSIST', KEYS[2])
  redis.call('PERSIST', KEYS[9])
  redis.call('PERSIST', KEYS[10])
end
if before_state ~= ARGV[9] then
  if before_state then
    redis.call('HINCRBY', KEYS[5], ARGV[7] .. ':' .. before_state, -1)
  end
  redis.call('HINCRBY', KEYS[5], ARGV[7] .. ':' .. ARGV[9], 1)
  if terminal[ARGV[9]] and not terminal[before_state or ''] then
    redis.call('HINCRBY', KEYS[6], ARGV[7] .. ':' .. ARGV[9], 1)
  end
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[11], '*', 'job_id', ARGV[12], 'state', ARGV[9],
             'provider', ARGV[7], 'account', ARGV[8])
end
local sent = tonumber(ARGV[10]) - before_bytes
if sent > 0 then
  redis.call('HINCRBY', KEYS[7], ARGV[7] .. ':' .. ARGV[8], sent)
end
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[3])
  if ARGV[14] == '1' then
    redis.call('DEL', KEYS[11])
  end
else
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3])
end
if ARGV[5] ~= '' then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[4], tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[6]), ARGV[5])
end
return 1
