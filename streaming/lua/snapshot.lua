-- KEYS: session hash, offer frame.
-- Needs helpers.lua.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return {snapshot(KEYS[1]), redis.call('GET', KEYS[2]) or ''}
