-- What the database says a day's rules spent: a rule's count only ever goes up (the database may
-- not yet hold what the workers spent a moment ago).
-- KEYS: the day's budget hash. ARGV: ttl in ms, then rule id, count, for each rule.
local key = KEYS[1]
for i = 2, #ARGV, 2 do
  local used = tonumber(redis.call('HGET', key, ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > used then redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
end
redis.call('PEXPIRE', key, ARGV[1])
return 1
