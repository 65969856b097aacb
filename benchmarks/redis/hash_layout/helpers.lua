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

-- The hash as one msgpack string (a reply of many small strings is slow to read in Python),
-- without the ring of event ids, which only this script needs.
local function snapshot(key)
  local flat, kept = redis.call('HGETALL', key), {}
  for i = 1, #flat, 2 do
    if not string.find(flat[i], '^e%d') then
      kept[#kept + 1] = flat[i]
      kept[#kept + 1] = flat[i + 1]
    end
  end
  return cmsgpack.pack(kept)
end

-- A session that can pause: cart not empty, not bought, and its current pause (activity_seq)
-- neither decided nor being decided.
local function can_pause(nc, pu, sq, dq, lq)
  sq = sq or '0'
  return (tonumber(nc) or 0) > 0 and pu ~= '1' and dq ~= sq and lq ~= sq
end
