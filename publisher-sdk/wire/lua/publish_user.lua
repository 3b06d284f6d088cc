-- Publishes one user notification atomically.
-- KEYS[1] user stream sse:{u:<user>}:log
-- ARGV[1] event type  ARGV[2] data JSON  ARGV[3] user stream MAXLEN
-- ARGV[4] user retention ms  ARGV[5] user channel  ARGV[6] PUBLISH or SPUBLISH
-- Returns the user stream id.
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'type', ARGV[1], 'data', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call(ARGV[6], ARGV[5], 'id: ' .. id .. '\nevent: ' .. ARGV[1] .. '\ndata: ' .. ARGV[2] .. '\n\n')
return id
