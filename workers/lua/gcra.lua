-- GCRA rate limiter with a fleet-wide cooldown, one clock for the whole fleet (Redis TIME).
-- KEYS[1] theoretical arrival time (microseconds) of the budget
-- KEYS[2] cooldown-until (microseconds), set after a provider's 429
-- KEYS[3] grant counter of the current minute (for `ingest-fleet budgets`)
-- ARGV[1] emission interval in microseconds (1e6 / rate)
-- ARGV[2] burst: how many calls may go back to back
-- returns {1, 0} when granted, {0, wait_us} when the caller must wait
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cooldown = tonumber(redis.call('GET', KEYS[2]) or '0')
if cooldown > now then
  return {0, cooldown - now}
end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
if allow_at > now then
  return {0, allow_at - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], 120)
return {1, 0}
