-- Publishes one job event atomically (all keys share the owner's {u:<user>} hash tag).
-- KEYS[1] job state hash   sse:{u:<user>}:job:<job>
-- KEYS[2] job stream       sse:{u:<user>}:job:<job>:log
-- KEYS[3] user stream      sse:{u:<user>}:log
-- KEYS[4] user jobs index  sse:{u:<user>}:jobs
-- ARGV[1] job id            ARGV[2] owner            ARGV[3] event type
-- ARGV[4] data JSON (one line, rendered by the publisher)   ARGV[5] ts (ms)
-- ARGV[6] job stream MAXLEN ARGV[7] user stream MAXLEN
-- ARGV[8] "1" when the event is terminal
-- ARGV[9] retention ms (job keys, after a terminal event)
-- ARGV[10] user retention ms (user keys; job keys while the job runs)
-- ARGV[11] job channel      ARGV[12] user channel    ARGV[13] PUBLISH or SPUBLISH
-- ARGV[14..] state fields to set, as name, JSON value pairs
-- Returns { job stream id, user stream id }.
local job_id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'type', ARGV[3], 'data', ARGV[4])
local user_id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'type', ARGV[3], 'data', ARGV[4])
-- One HSET for the whole state change (pairs apply in order, later ones win): the
-- initial fields of a new job, the event's fields, then updatedAt and lastEventId.
local state = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
  state = {
    'jobId', '"' .. ARGV[1] .. '"', 'owner', '"' .. ARGV[2] .. '"', 'status', '"queued"',
    'progress', '0', 'stage', 'null', 'message', 'null', 'result', 'null', 'error', 'null',
    'createdAt', ARGV[5]}
end
for i = 14, #ARGV do
  state[#state + 1] = ARGV[i]
end
state[#state + 1] = 'updatedAt'
state[#state + 1] = ARGV[5]
state[#state + 1] = 'lastEventId'
state[#state + 1] = '"' .. job_id .. '"'
redis.call('HSET', KEYS[1], unpack(state))
-- The index only grows when the job is new to it; only then can it pass 1000.
if redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1]) == 1 then
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -1001)
end
local job_ttl = ARGV[10]
if ARGV[8] == '1' then job_ttl = ARGV[9] end
redis.call('PEXPIRE', KEYS[1], job_ttl)
redis.call('PEXPIRE', KEYS[2], job_ttl)
redis.call('PEXPIRE', KEYS[3], ARGV[10])
redis.call('PEXPIRE', KEYS[4], ARGV[10])
local tail = '\nevent: ' .. ARGV[3] .. '\ndata: ' .. ARGV[4] .. '\n\n'
redis.call(ARGV[13], ARGV[11], 'id: ' .. job_id .. tail)
redis.call(ARGV[13], ARGV[12], 'id: ' .. user_id .. tail)
return { job_id, user_id }
