-- The dashboard's publisher: take the publisher's lease, or keep it; 1 if this process publishes.
-- KEYS: the lease. ARGV: this process's id, the lease in ms.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
