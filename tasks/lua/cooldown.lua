-- Extend a fleet-wide cooldown: never shortens one another worker already set.
-- KEYS[1] cooldown-until (microseconds); KEYS[2] consecutive-429 counter
-- ARGV[1] seconds to cool down, or -1 when the provider gave no Retry-After
-- ARGV[2] base seconds, ARGV[3] cap seconds of the exponential fallback
-- returns the cooldown length applied, in microseconds
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local seconds = tonumber(ARGV[1])
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 600)
if seconds < 0 then
  seconds = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * (2 ^ (n - 1)))
end
local untl = now + math.floor(seconds * 1000000)
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > cur then
  redis.call('SET', KEYS[1], string.format('%d', untl), 'PX', math.ceil(seconds * 1000) + 1000)
end
return math.floor(seconds * 1000000)
