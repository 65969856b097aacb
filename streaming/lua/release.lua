-- The decision's offer was sent: give back the lease `settle` kept for it, if still ours.
-- KEYS: session state, leases. ARGV: session id, seq, worker.
-- Needs helpers.lua.
local key, leases = KEYS[1], KEYS[2]
local sid, seq, worker = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local h = load(key)
if not h or h.lq ~= seq or h.lw ~= worker then return 0 end
h.lq, h.lw, h.rs = nil, nil, nil
save(key, h)
redis.call('ZREM', leases, sid)
return 1
