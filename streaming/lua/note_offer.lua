-- KEYS: session state, offer frame. ARGV: at, offer id, frame, expires at ('' without a frame).
-- The frame key lives exactly as long as the session's state.
-- Needs helpers.lua.
local key, offer_key = KEYS[1], KEYS[2]
local ttl = redis.call('PTTL', key)
if ttl < 0 then return 0 end
local h = load(key)
h.to = tonumber(ARGV[1])
if ARGV[3] ~= '' then
  h.oi = ARGV[2]
  h.ox = tonumber(ARGV[4])
  redis.call('SET', offer_key, ARGV[3], 'PX', ttl)
end
save(key, h)
return 1
