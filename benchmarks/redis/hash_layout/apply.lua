-- The twin of `SessionState.apply` (streaming/state.py) for Redis mode: the same events make the
-- same state. tests/streaming/test_redis_store.py::test_it_holds_the_same_state_as_the_memory_store
-- keeps the two equal over generated sessions.
-- One call of `apply` (and of `open`, which is `apply` without events).
-- KEYS: session hash, offer frame, pauses, live, carts.
-- ARGV: session id, site, now, idle ms, pause seconds, want state ('1': return the hash too),
-- then 7 values an event: name, activity ('1'/'0'), id digest, product id / offer id /
-- visibility state, price, quantity ('' for all), product CRC.
-- Events come as flat arguments rather than JSON: nothing to decode, and digests are binary.
-- The state is read once (HGETALL of a small listpack), changed in Lua tables, and only the
-- fields that changed are written back: a call's fixed cost is paid once for a whole batch.
-- Needs helpers.lua; the dollar names are filled in from streaming/state.py's constants.
local key, offer_key, pauses, live, carts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local sid, site, now_s, idle_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local pause, want = tonumber(ARGV[5]), ARGV[6]
local now = tonumber(now_s)

local flat = redis.call('HGETALL', key)
local h = {}
for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
local dirty = {}
local function put(f, v) h[f] = v; dirty[f] = true end
local function bump(f) put(f, tostring((tonumber(h[f]) or 0) + 1)) end

-- New, expired, or (never in practice) the same id on another site: start empty.
local new = h.st ~= site
if new then
  if #flat > 0 then redis.call('DEL', key, offer_key) end
  h = {}
  put('st', site); put('t0', now_s); put('tl', now_s); put('ta', now_s)
elseif now > tonumber(h.tl) then
  put('tl', now_s)
end
local function deadline()
  if not can_pause(h.nc, h.pu, h.sq, h.dq, h.lq) then return false end
  return tonumber(h.ta) + pause
end
local function cart_open() return (tonumber(h.nc) or 0) > 0 and h.pu ~= '1' end
local was_deadline, was_open = deadline(), cart_open()

-- Recent event ids and distinct products: packed digests, split into 64-byte chunks.
local function unpack_chunks(prefix)
  local parts, i = {}, 0
  while h[prefix .. i] do parts[#parts + 1] = h[prefix .. i]; i = i + 1 end
  return table.concat(parts)
end
local ring, ring_next, ring_dirty = unpack_chunks('e'), tonumber(h.en) or 0, {}
local products, products_dirty = unpack_chunks('p'), {}
local function chunk_of(offset) return math.floor(offset / $chunk) end

local function remember(id)
  local at
  if #ring < $recent * $id_bytes then
    at = #ring
    ring = ring .. id
  else
    at = ring_next * $id_bytes
    ring = string.sub(ring, 1, at) .. id .. string.sub(ring, at + $id_bytes + 1)
    ring_next = (ring_next + 1) % $recent
    put('en', tostring(ring_next))
  end
  ring_dirty[chunk_of(at)] = true
end

local function see_product(crc)
  if #products < $products * $product_bytes and not holds(products, crc, $product_bytes) then
    products_dirty[chunk_of(#products)] = true
    products = products .. crc
  end
end

local nc = tonumber(h.nc) or 0
-- The effect of one event, exactly as SessionState.apply; false when the cart is full.
local function apply_event(name, ref, price, qty, crc)
  if name == 'add_to_cart' then
    local f = 'c:' .. ref
    local line, have = h[f], 0
    if line then
      have = tonumber(string.match(line, '^(%d+)'))
    elseif nc >= $cart_lines then
      return false
    else
      nc = nc + 1
    end
    put(f, math.min(have + tonumber(qty), $max_quantity) .. '|' .. price)
    see_product(crc)
    bump('ad')
    put('tc', now_s)
    put('vs', nil)
  elseif name == 'product_view' then
    see_product(crc)
    bump('vv')
    bump('vs')
  elseif name == 'page_view' then
    bump('pv')
  elseif name == 'search' then
    bump('sr')
  elseif name == 'remove_from_cart' then
    local f = 'c:' .. ref
    local line = h[f]
    if line then
      local have, unit = string.match(line, '^(%d+)|(.*)$$')
      local left = 0
      if qty ~= '' then left = tonumber(have) - tonumber(qty) end
      if left > 0 then
        put(f, left .. '|' .. unit)
      else
        put(f, nil)
        nc = nc - 1
      end
    end
    bump('rm')
  elseif name == 'checkout_start' then
    put('co', '1')
  elseif name == 'purchase' then
    put('pu', '1')
  elseif name == 'visibility' then
    if ref == 'hidden' then put('hd', '1') else put('hd', nil) end
  elseif name == 'offer_shown' then
    bump('os')
  elseif name == 'offer_accepted' or name == 'offer_dismissed' then
    bump(name == 'offer_accepted' and 'oa' or 'od')
    -- An answered offer is not shown again on the next page.
    if ref == h.oi then redis.call('DEL', offer_key) end
  end
  return true
end

local status = {}
for i = 7, #ARGV, 7 do
  local id = ARGV[i + 2]
  if holds(ring, id, $id_bytes) then
    status[#status + 1] = 'd'
  elseif apply_event(ARGV[i], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]) then
    remember(id)
    put('tl', now_s)
    if ARGV[i + 1] == '1' then
      put('ta', now_s)
      bump('sq')
    end
    status[#status + 1] = 'f'
  else
    status[#status + 1] = 'x'
  end
end
if nc ~= (tonumber(h.nc) or 0) then put('nc', nc > 0 and tostring(nc) or nil) end
for c in pairs(ring_dirty) do
  put('e' .. c, string.sub(ring, c * $chunk + 1, (c + 1) * $chunk))
end
for c in pairs(products_dirty) do
  put('p' .. c, string.sub(products, c * $chunk + 1, (c + 1) * $chunk))
end

local set, gone = {}, {}
for f in pairs(dirty) do
  if h[f] then
    set[#set + 1] = f
    set[#set + 1] = h[f]
  else
    gone[#gone + 1] = f
  end
end
if #set > 0 then redis.call('HSET', key, unpack(set)) end
if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
redis.call('PEXPIRE', key, idle_ms)
if h.oi then redis.call('PEXPIRE', offer_key, idle_ms) end
redis.call('ZADD', live, h.tl, sid)
if cart_open() then
  redis.call('ZADD', carts, h.tl, sid)
elseif was_open or new then
  redis.call('ZREM', carts, sid)
end
-- The pause timer moves only when the deadline does (heartbeats leave it alone).
local due = deadline()
if new or due ~= was_deadline then
  if due then
    redis.call('ZADD', pauses, string.format('%.17g', due), sid)
  else
    redis.call('ZREM', pauses, sid)
  end
end

local done = table.concat(status)
if want ~= '1' then return done end
return {done, snapshot(key), redis.call('GET', offer_key) or ''}
