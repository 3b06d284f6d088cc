-- Publishes one job event atomically (all keys share the owner's {u:<user>} hash tag).
-- KEYS[1] job state hash   sse:{u:<user>}:job:<job>
-- KEYS[2] job stream       sse:{u:<user>}:joblog:<job>
-- KEYS[3] user stream      sse:{u:<user>}:log
-- KEYS[4] user jobs index  sse:{u:<user>}:jobs
-- KEYS[5] (optional) idempotency record sse:{u:<user>}:idem:<key>
-- ARGV[1] job id            ARGV[2] owner            ARGV[3] event type
-- ARGV[4] data JSON (one line, rendered by the publisher)   ARGV[5] ts (ms)
-- ARGV[6] job stream MAXLEN ARGV[7] user stream MAXLEN
-- ARGV[8] "1" when the event is terminal
-- ARGV[9] retention ms (job keys, after a terminal event)
-- ARGV[10] user retention ms (user keys; job keys while the job runs)
-- ARGV[11] job channel      ARGV[12] user channel    ARGV[13] PUBLISH or SPUBLISH
-- ARGV[14] "1" to reopen a finished job   ARGV[15] idempotency window ms
-- ARGV[16..] state fields to set, as name, JSON value pairs
-- Returns { "published", job stream id, user stream id }, or
-- { "duplicate", job stream id of the first publish } (same idempotency key, nothing
-- published), or { "finished" } (the job has ended and ARGV[14] is not "1").
if KEYS[5] then
  local first = redis.call('GET', KEYS[5])
  if first then return { 'duplicate', first } end
end
local prior = redis.call('HMGET', KEYS[1], 'status', 'lastEventId')
local status = prior[1]
local finished = status == '"completed"' or status == '"failed"' or status == '"cancelled"'
if finished and ARGV[14] ~= '1' then return { 'finished' } end
local job_id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'type', ARGV[3], 'data', ARGV[4])
local user_id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'type', ARGV[3], 'data', ARGV[4])
-- One HSET for the whole state change (pairs apply in order, later ones win): the
-- initial fields of a new job (or a reopened one's reset), the event's fields, then
-- updatedAt, lastEventId and userEventId (the event's id in the user stream: unlike job
-- stream ids, which two jobs can share, it orders the user's jobs by their last update).
local state = {}
if not status then
  state = {
    'jobId', '"' .. ARGV[1] .. '"', 'owner', '"' .. ARGV[2] .. '"', 'status', '"queued"',
    'progress', '0', 'stage', 'null', 'message', 'null', 'result', 'null', 'error', 'null',
    'createdAt', ARGV[5]}
elseif finished then
  state = { 'status', '"queued"', 'result', 'null', 'error', 'null' }
end
for i = 16, #ARGV do
  state[#state + 1] = ARGV[i]
end
state[#state + 1] = 'updatedAt'
state[#state + 1] = ARGV[5]
state[#state + 1] = 'lastEventId'
state[#state + 1] = '"' .. job_id .. '"'
state[#state + 1] = 'userEventId'
state[#state + 1] = '"' .. user_id .. '"'
redis.call('HSET', KEYS[1], unpack(state))
-- The TTLs and the jobs index are written when the job is new, reopened, finishing or
-- changing status, and otherwise by the first event of each refresh window of Redis's
-- own clock (the stream ids' milliseconds): min(1 min, user retention / 10). A renewed
-- TTL is the retention plus one window, so every key lives at least its retention after
-- the job's last event, and the index's score lags the last update by less than a window.
local window = math.max(1, math.min(60000, math.floor(tonumber(ARGV[10]) / 10)))
local now = tonumber(string.match(job_id, '^%d+'))
local last = prior[2] and tonumber(string.match(prior[2], '%d+'))
local renew = not status or finished or ARGV[8] == '1' or not last
  or math.floor(now / window) ~= math.floor(last / window)
if not renew then
  for i = 16, #ARGV, 2 do
    if ARGV[i] == 'status' and ARGV[i + 1] ~= status then renew = true end
  end
end
if renew then
  -- The index only grows when the job is new to it; only then can it pass 1000.
  if redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1]) == 1 then
    redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -1001)
  end
  local job_ttl = ARGV[10] + window
  if ARGV[8] == '1' then job_ttl = ARGV[9] end
  redis.call('PEXPIRE', KEYS[1], job_ttl)
  redis.call('PEXPIRE', KEYS[2], job_ttl)
  redis.call('PEXPIRE', KEYS[3], ARGV[10] + window)
  redis.call('PEXPIRE', KEYS[4], ARGV[10] + window)
end
if KEYS[5] then redis.call('SET', KEYS[5], job_id, 'PX', ARGV[15]) end
local tail = '\nevent: ' .. ARGV[3] .. '\ndata: ' .. ARGV[4] .. '\n\n'
redis.call(ARGV[13], ARGV[11], 'id: ' .. job_id .. tail)
redis.call(ARGV[13], ARGV[12], 'id: ' .. user_id .. tail)
return { 'published', job_id, user_id }
