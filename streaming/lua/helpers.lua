-- Helpers shared by the scripts. `holds` is `state._holds` in Lua: a match must start on a key
-- boundary, or the tail of one digest and the head of the next could fake a match.
local function holds(packed, k, width)
  local at = string.find(packed, k, 1, true)
  while at do
    if (at - 1) % width == 0 then return true end
    at = string.find(packed, k, at + 1, true)
  end
  return false
end

-- A session's state: one msgpack map (see redis_store.py), or nil when there is none. A session
-- kept by an earlier version as a hash of fields (a WRONGTYPE error here) starts afresh: the
-- next write replaces it.
local function load(key)
  local packed = redis.pcall('GET', key)
  if type(packed) ~= 'string' then return nil end
  return cmsgpack.unpack(packed)
end

-- Writes the state back, keeping the key's time to live; returns what was written.
local function save(key, h)
  local packed = cmsgpack.pack(h)
  redis.call('SET', key, packed, 'KEEPTTL')
  return packed
end

-- A session that can pause: cart not empty, not bought, and its current pause (activity_seq)
-- neither decided nor, unless `leased_too`, being decided.
local function can_pause(h, leased_too)
  local sq = h.sq or 0
  return (h.nc or 0) > 0 and not h.pu and h.dq ~= sq and (leased_too or h.lq ~= sq)
end

local function score(x) return string.format('%.17g', x) end
