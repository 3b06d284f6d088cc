-- Publishes one user notification atomically.
-- KEYS[1] user stream sse:{u:<user>}:log
-- KEYS[2] (optional) idempotency record sse:{u:<user>}:idem:<key>
-- ARGV[1] event type  ARGV[2] data JSON  ARGV[3] user stream MAXLEN
-- ARGV[4] user retention ms  ARGV[5] user channel  ARGV[6] PUBLISH or SPUBLISH
-- ARGV[7] idempotency window ms
-- Returns { "published", user stream id } or { "duplicate", id of the first publish }.
if KEYS[2] then
  local first = redis.call('GET', KEYS[2])
  if first then return { 'duplicate', first } end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'type', ARGV[1], 'data', ARGV[2])
-- Plus the refresh window of publish_job.lua, which renews the user's keys only once
-- per window: a notification never shortens what a job event set.
local window = math.max(1, math.min(60000, math.floor(tonumber(ARGV[4]) / 10)))
redis.call('PEXPIRE', KEYS[1], ARGV[4] + window)
if KEYS[2] then redis.call('SET', KEYS[2], id, 'PX', ARGV[7]) end
redis.call(ARGV[6], ARGV[5], 'id: ' .. id .. '\nevent: ' .. ARGV[1] .. '\ndata: ' .. ARGV[2] .. '\n\n')
return { 'published', id }
