-- The twin of `SessionState.apply` (streaming/state.py) for Redis mode: the same events make the
-- same state. tests/streaming/test_redis_store.py::test_it_holds_the_same_state_as_the_memory_store
-- keeps the two equal over generated sessions.
-- One call of `apply` (and of `open`, which is `apply` without events).
-- KEYS: session state, offer frame, pauses, live, carts.
-- ARGV: session id, site, now, idle ms, pause seconds, want state ('1': return the state too),
-- then 7 values an event: name, activity ('1'/'0'), id digest, product id / offer id /
-- visibility state, price, quantity ('' for all), product CRC.
-- Events come as flat arguments rather than JSON: nothing to decode, and digests are binary.
-- The state is one msgpack value: read with one GET, changed in a Lua table, written with one
-- SET, whatever the number of events; a call's fixed cost is paid once for a whole batch.
-- Needs helpers.lua; the dollar names are filled in from streaming/state.py's constants.
local key, offer_key, pauses, live, carts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local sid, site, idle_ms = ARGV[1], ARGV[2], ARGV[4]
local now, pause, want = tonumber(ARGV[3]), tonumber(ARGV[5]), ARGV[6]

local h = load(key)
-- New, expired, or (never in practice) the same id on another site: start empty.
local new = not h or h.st ~= site
if new then
  if h then redis.call('DEL', offer_key) end
  h = {st = site, t0 = now, tl = now, ta = now}
elseif now > h.tl then
  h.tl = now
end
local function deadline()
  if not can_pause(h) then return false end
  return h.ta + pause
end
local function cart_open() return (h.nc or 0) > 0 and not h.pu end
local was_deadline, was_open = deadline(), cart_open()
local function bump(f) h[f] = (h[f] or 0) + 1 end

-- Recent event ids and distinct products: packed digests.
local ring, products = h.e or '', h.p or ''
local function remember(id)
  if #ring < $recent * $id_bytes then
    ring = ring .. id
  else
    local next = h.en or 0
    local at = next * $id_bytes
    ring = string.sub(ring, 1, at) .. id .. string.sub(ring, at + $id_bytes + 1)
    h.en = (next + 1) % $recent
  end
end

local function see_product(crc)
  if #products < $products * $product_bytes and not holds(products, crc, $product_bytes) then
    products = products .. crc
  end
end

local cart, nc = h.c or {}, h.nc or 0
-- The effect of one event, exactly as SessionState.apply; false when the cart is full.
local function apply_event(name, ref, price, qty, crc)
  if name == 'add_to_cart' then
    local line = cart[ref]
    if line then
      line[1] = math.min(line[1] + tonumber(qty), $max_quantity)
      line[2] = tonumber(price)
    elseif nc >= $cart_lines then
      return false
    else
      nc = nc + 1
      cart[ref] = {math.min(tonumber(qty), $max_quantity), tonumber(price)}
    end
    see_product(crc)
    bump('ad')
    h.tc = now
    h.vs = nil
  elseif name == 'product_view' then
    see_product(crc)
    bump('vv')
    bump('vs')
  elseif name == 'page_view' then
    bump('pv')
  elseif name == 'search' then
    bump('sr')
  elseif name == 'remove_from_cart' then
    local line = cart[ref]
    if line then
      local left = 0
      if qty ~= '' then left = line[1] - tonumber(qty) end
      if left > 0 then
        line[1] = left
      else
        cart[ref] = nil
        nc = nc - 1
      end
    end
    bump('rm')
  elseif name == 'checkout_start' then
    h.co = true
  elseif name == 'purchase' then
    h.pu = true
  elseif name == 'visibility' then
    h.hd = ref == 'hidden' or nil
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
    h.tl = now
    if ARGV[i + 1] == '1' then
      h.ta = now
      bump('sq')
    end
    status[#status + 1] = 'f'
  else
    status[#status + 1] = 'x'
  end
end
h.nc = nc > 0 and nc or nil
-- An empty table would pack as an array: no cart is no key.
h.c = nc > 0 and cart or nil
h.e = ring ~= '' and ring or nil
h.p = products ~= '' and products or nil

local packed = cmsgpack.pack(h)
redis.call('SET', key, packed, 'PX', idle_ms)
if h.oi then redis.call('PEXPIRE', offer_key, idle_ms) end
redis.call('ZADD', live, score(h.tl), sid)
if cart_open() then
  redis.call('ZADD', carts, score(h.tl), sid)
elseif was_open or new then
  redis.call('ZREM', carts, sid)
end
-- The pause timer moves only when the deadline does (heartbeats leave it alone).
local due = deadline()
if new or due ~= was_deadline then
  if due then
    redis.call('ZADD', pauses, score(due), sid)
  else
    redis.call('ZREM', pauses, sid)
  end
end

local done = table.concat(status)
if want ~= '1' then return done end
return {done, packed, redis.call('GET', offer_key) or ''}
