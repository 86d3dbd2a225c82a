-- Take the per-job lease and a new fencing token.
-- KEYS[1] lease key, KEYS[2] fence counter
-- ARGV[1] lease ttl (ms), ARGV[2] '1' to take it even if held (operator actions: cancel, retry)
-- returns {token, 0} on success, {0, pttl_ms} when another holder has it
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('PTTL', KEYS[1])}
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return {token, 0}
