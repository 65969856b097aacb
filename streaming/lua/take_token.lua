-- One token of a token bucket shared by every process: `rate` tokens a second, at most `burst`.
-- KEYS: the bucket (a hash: tokens, at). ARGV: rate, burst.
-- Time is the Redis server's, so that processes whose clocks differ share one bucket fairly.
-- Returns 1 when a token was taken, 0 when the bucket is empty.
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(held[1]) or burst, tonumber(held[2]) or now
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
  at = now
end
local taken = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', at)
-- A full bucket is no bucket: the key goes once it would have refilled.
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return taken
