-- Take the per-job lease and a new fencing token.
-- KEYS[1] lease key, KEYS[2] fence counter, KEYS[3] job record, KEYS[4] the dispatch's start count,
-- KEYS[5] the job's cancel request (ingest_fleet.Client.cancel)
-- ARGV[1] lease ttl (ms), ARGV[2] '1' to take it even if held (operator actions: cancel, retry)
-- ARGV[3] a dispatch's task id, or '': take the lease only while the record names this
--         dispatch and is not terminal, checked in this same atomic step (a duplicate message
--         that stalled after its own check must not run the step again on an old record)
-- returns {token, 0, starts, cancel, record} on success (cancel: 1 when a cancel was requested;
-- starts: how often this dispatch took the lease, so a dispatch whose runs are all killed cannot
-- loop), {0, pttl_ms, record} when another holder has it, {0, -1, record} when the dispatch is
-- stale (the record names another one, is terminal, or is gone). With a dispatch, record is the
-- job record as read in this atomic step (the run needs no read of its own); else ''.
local raw = ''
if ARGV[3] ~= '' then
  raw = redis.call('GET', KEYS[3])
  if not raw then
    return {0, -1, ''}
  end
  local record = cjson.decode(raw)
  local dispatch = record['dispatch']
  if type(dispatch) ~= 'table' or dispatch['task_id'] ~= ARGV[3] then
    return {0, -1, raw}
  end
  local state = record['state']
  if state == 'ready' or state == 'failed' or state == 'cancelled' then
    return {0, -1, raw}
  end
end
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('PTTL', KEYS[1]), raw}
end
-- The token is the server's time in microseconds, or the last token + 1 if that is not more:
-- tokens only grow, and after a failover to a replica that missed the last ones, its clock
-- (later than any token the old primary handed out) still gives a larger one (issue 13).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local token = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') + 1, now)
redis.call('SET', KEYS[2], string.format('%.0f', token))
redis.call('SET', KEYS[1], string.format('%.0f', token), 'PX', ARGV[1])
local starts = 0
if ARGV[3] ~= '' then
  starts = redis.call('INCR', KEYS[4])
  redis.call('EXPIRE', KEYS[4], 86400)
end
return {token, 0, starts, redis.call('EXISTS', KEYS[5]), raw}
