-- The decision of pause `seq` is recorded: mark it decided, unless the shopper came back since
-- (then a new pause is under way and keeps its timer), and give the lease back if still ours.
-- KEYS: session hash, pauses, leases. ARGV: session id, seq.
local key, pauses, leases = KEYS[1], KEYS[2], KEYS[3]
local sid, seq = ARGV[1], ARGV[2]
local sq, lq = unpack(redis.call('HMGET', key, 'sq', 'lq'))
if lq == seq then redis.call('HDEL', key, 'lq') end
if lq == seq or not lq then redis.call('ZREM', leases, sid) end
-- An expired hash stays gone: writing to it would leave a field without a TTL.
if not sq and redis.call('EXISTS', key) == 1 then sq = '0' end
if sq == seq then
  redis.call('HSET', key, 'dq', seq)
  redis.call('ZREM', pauses, sid)
end
return 1
