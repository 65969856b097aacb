-- Spend a rule's daily budget, never past it: for each rule, grant what is asked or what is left.
-- KEYS: the day's budget hash (rule id -> offers and holdouts made). ARGV: ttl in ms, then
-- rule id, wanted, daily budget, for each rule. Returns the granted counts, in order.
local key, ttl = KEYS[1], ARGV[1]
local granted = {}
for i = 2, #ARGV, 3 do
  local rule, wanted, limit = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local used = tonumber(redis.call('HGET', key, rule) or '0')
  local grant = math.max(0, math.min(wanted, limit - used))
  if grant > 0 then redis.call('HINCRBY', key, rule, grant) end
  granted[#granted + 1] = grant
end
redis.call('PEXPIRE', key, ttl)
return granted
