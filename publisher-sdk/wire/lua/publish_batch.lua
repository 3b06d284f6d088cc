-- Publishes several events in one call, in order: job events, user notifications and
-- topic events, each exactly as its own script would (same keys, arguments and replies).
-- Not a script by itself: the script that runs is publish_job.lua, publish_user.lua and
-- publish_topic.lua, each wrapped as a function of (KEYS, ARGV) named publish_job,
-- publish_user and publish_topic, followed by this file:
--   local function publish_job(KEYS, ARGV)\n<publish_job.lua>\nend\n
--   local function publish_user(KEYS, ARGV)\n<publish_user.lua>\nend\n
--   local function publish_topic(KEYS, ARGV)\n<publish_topic.lua>\nend\n
--   <publish_batch.lua>
-- On Redis Cluster every key of one call must share a hash slot: a publisher sends one
-- call per hash tag ({u:<user>} or {t:<topic>}).
-- KEYS     every event's keys, one event after the other
-- ARGV[1]  the number of events; then for each event: its kind ("job", "user" or
--          "topic"), its number of keys, its number of arguments, then its arguments
-- Returns one reply per event, in order, each what the event's own script returns.
local scripts = { job = publish_job, user = publish_user, topic = publish_topic }
local replies = {}
local k, a = 0, 2
for i = 1, tonumber(ARGV[1]) do
  local run = scripts[ARGV[a]]
  local nkeys, nargs = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local keys, args = {}, {}
  for j = 1, nkeys do keys[j] = KEYS[k + j] end
  for j = 1, nargs do args[j] = ARGV[a + j - 1] end
  k = k + nkeys
  a = a + nargs
  replies[i] = run(keys, args)
end
return replies
