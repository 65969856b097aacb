-- Workers take due pauses here, each under a lease: two workers never get the same pause, and
-- the pause of a worker that died mid-decision goes to another once its lease has expired.
-- KEYS: pauses, leases. ARGV: now, limit, lease expiry, session key prefix, worker (the
-- lease's holder: only it may store the pause's decision).
-- Returns {sid, state, sid, state, ...}, the earliest pause deadline and the earliest lease
-- expiry ('' when none).
-- Needs helpers.lua.
local pauses, leases = KEYS[1], KEYS[2]
local now_s, limit, until_s, prefix, worker = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local claimed, n = {}, 0

local function lease(sid, key, h, sq)
  h.lq = sq
  h.lw = worker
  redis.call('ZADD', leases, until_s, sid)
  claimed[#claimed + 1] = sid
  claimed[#claimed + 1] = save(key, h)
  n = n + 1
end

-- Expired leases first: their pauses are the most overdue. A lease is taken over only while
-- its pause is still the session's current one; after new activity the shopper is back, and
-- the new pause has its own timer.
for _, sid in ipairs(redis.call('ZRANGE', leases, '-inf', now_s, 'BYSCORE', 'LIMIT', 0, limit)) do
  local key = prefix .. sid
  local h = load(key)
  local sq = h and (h.sq or 0)
  if h and h.lq == sq and can_pause(h, true) then
    lease(sid, key, h, sq)
  elseif h and h.rs and h.rs == h.lq and h.rs == sq then
    -- decided and stored, its offer perhaps never sent (the shopper has not come back since):
    -- the new holder sends it again
    lease(sid, key, h, h.lq)
  else
    redis.call('ZREM', leases, sid)
    if h and h.lq then
      h.lq, h.lw, h.rs = nil, nil, nil
      save(key, h)
    end
  end
end

if n < limit then
  local due = redis.call('ZRANGE', pauses, '-inf', now_s, 'BYSCORE', 'LIMIT', 0, limit - n)
  for _, sid in ipairs(due) do
    redis.call('ZREM', pauses, sid)
    local key = prefix .. sid
    local h = load(key)
    -- An expired session or a stale timer is dropped.
    if h and can_pause(h) then lease(sid, key, h, h.sq or 0) end
  end
end

local first_pause = redis.call('ZRANGE', pauses, 0, 0, 'WITHSCORES')[2] or ''
local first_lease = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')[2] or ''
return {claimed, first_pause, first_lease}
