-- KEYS: session hash, offer frame. ARGV: at, offer id, frame, expires at ('' without a frame).
-- The frame key lives exactly as long as the session's hash.
local key, offer_key = KEYS[1], KEYS[2]
local ttl = redis.call('PTTL', key)
if ttl < 0 then return 0 end
redis.call('HSET', key, 'to', ARGV[1])
if ARGV[3] ~= '' then
  redis.call('HSET', key, 'oi', ARGV[2], 'ox', ARGV[4])
  redis.call('SET', offer_key, ARGV[3], 'PX', ttl)
end
return 1
