-- Registers a job's owner, or confirms it (refreshing its TTL).
-- KEYS[1] sse:owner:<job>   ARGV[1] owner   ARGV[2] TTL ms
-- Returns nil when ARGV[1] is (now) the owner, else the registered owner.
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return current
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
