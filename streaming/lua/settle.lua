-- A decision, stored with its pause: into the record stream, its offer or holdout noted on the
-- session, the pause decided for good and its lease given back. All or nothing, and only while
-- the lease is still this worker's: a worker whose lease expired and was taken over stores
-- nothing (and sends nothing); the worker that took it over decides.
-- KEYS: session state, offer frame, pauses, leases, record stream.
-- ARGV: session id, seq, worker, record, at ('' for no note), offer id, frame, expires at
-- (offer id, frame and expires at '' for a holdout), '1' when an offer frame is to be sent.
-- A decision with a frame to send keeps its lease (`rs`, the pause to send) until `release`:
-- should the worker die before sending, the lease runs out and another worker sends it again.
-- Returns 1 when stored, 0 when the pause is no longer this worker's.
-- Needs helpers.lua.
local key, offer_key, pauses, leases, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local sid, seq, worker, record = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local at, offer_id, frame, expires, sends = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local h = load(key)
if not h or h.lq ~= seq or h.lw ~= worker then return 0 end
redis.call('XADD', stream, '*', 'r', record)
local ttl = redis.call('PTTL', key)
if at ~= '' and ttl > 0 then
  h.to = tonumber(at)
  if frame ~= '' then
    h.oi = offer_id
    h.ox = tonumber(expires)
    redis.call('SET', offer_key, frame, 'PX', ttl)
  end
end
if sends == '1' then
  h.rs = seq
else
  h.lq, h.lw, h.rs = nil, nil, nil
  redis.call('ZREM', leases, sid)
end
if (h.sq or 0) == seq then
  h.dq = seq
  redis.call('ZREM', pauses, sid)
end
save(key, h)
return 1
