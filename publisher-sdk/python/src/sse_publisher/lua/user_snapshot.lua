-- Reads a user's snapshot at one instant: the user stream's latest id and the states of
-- the user's most recently updated jobs (all keys share the user's hash tag).
-- KEYS[1] user stream  KEYS[2] user jobs index
-- ARGV[1] job key prefix sse:{u:<user>}:job:   ARGV[2] most jobs
-- Returns { latest id or "0-0", { HGETALL of each job that still exists }... }
local latest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local id = '0-0'
if latest[1] then id = latest[1][1] end
local jobs = redis.call('ZREVRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
local states = {}
for _, job in ipairs(jobs) do
  local state = redis.call('HGETALL', ARGV[1] .. job)
  if #state > 0 then states[#states + 1] = state end
end
return { id, states }
