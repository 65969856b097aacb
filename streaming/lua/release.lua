-- The decision's offer was sent: give back the lease `settle` kept for it, if still ours.
-- KEYS: session hash, leases. ARGV: session id, seq, worker.
local key, leases = KEYS[1], KEYS[2]
local sid, seq, worker = ARGV[1], ARGV[2], ARGV[3]
local lq, lw = unpack(redis.call('HMGET', key, 'lq', 'lw'))
if lq ~= seq or lw ~= worker then return 0 end
redis.call('HDEL', key, 'lq', 'lw', 'rs')
redis.call('ZREM', leases, sid)
return 1
