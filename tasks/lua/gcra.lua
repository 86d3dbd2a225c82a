-- GCRA rate limiter with a fleet-wide cooldown and reservations, one clock for the whole
-- fleet (Redis TIME).
-- KEYS[1] theoretical arrival time (microseconds) of the budget
-- KEYS[2] cooldown-until (microseconds), set after a provider's 429
-- KEYS[3] grant counter of the current minute (for `ingest-fleet budgets`)
-- KEYS[4] the caller's reservation: "<due in microseconds>:<times it came back too late>"
-- ARGV[1] emission interval in microseconds (1e6 / rate)
-- ARGV[2] burst: how many calls may go back to back
-- ARGV[3] how long the caller may sleep for a token (microseconds; 0 = not at all)
-- ARGV[4] 1: a wait longer than that reserves the token (the caller defers to its time)
-- ARGV[5] reservation lifetime in milliseconds past its due time
-- ARGV[6] how many times a holder back more than half an interval late takes a new slot
--         before it may use a late one (bounded: the call always goes in the end)
-- returns {1, sleep_us}: granted, send after sleeping sleep_us (the token is already taken)
--         {0, wait_us}:  not granted, nothing taken; come back in wait_us
--         {2, wait_us}:  reserved: the token is taken for now + wait_us and waits in KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cooldown = tonumber(redis.call('GET', KEYS[2]) or '0')
if cooldown > now then
  return {0, cooldown - now}
end
local max_wait = tonumber(ARGV[3])
local interval = tonumber(ARGV[1])
local late = 0
local reserved = redis.call('GET', KEYS[4])
if reserved then
  -- This caller's token was taken earlier, for a time it deferred to: use it, never a new one.
  local due = tonumber(string.match(reserved, '^(%d+)'))
  late = tonumber(string.match(reserved, ':(%d+)$') or '0')
  if due - now > max_wait then
    return {0, due - now}
  end
  redis.call('DEL', KEYS[4])
  if now - due <= interval / 4 or late >= tonumber(ARGV[6]) then
    return {1, math.max(0, due - now)}
  end
  -- Back too late: sent now it would crowd the calls reserved after it into the provider's
  -- window. Its slot is gone; it takes the next free one (a few times at most, then it goes).
  late = late + 1
end
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
local wait = math.max(0, allow_at - now)
if wait > max_wait and ARGV[4] ~= '1' then
  return {0, wait}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], 120)
if wait > max_wait then
  redis.call('SET', KEYS[4], string.format('%d:%d', allow_at, late), 'PX', math.ceil(wait / 1000) + tonumber(ARGV[5]))
  return {2, wait}
end
return {1, wait}
