-- Forward-decayed counters of one risk state (a principal, a subnet, a fingerprint), kept in
-- one hash so that any worker's increment commutes with any other's (see signals/state.py).
-- KEYS[1]: the hash. KEYS[2..]: other keys of the same state (same hash tag, so one slot on a
-- cluster), the ring and the band, whose expiry is renewed with the hash: a state expires as a
-- whole, as it does in the memory store.
-- ARGV: now, half_life (s), ttl_ms, then field/value pairs. A field without a leading "_" is a
-- counter: value x at time now adds x * 2^((now - L)/h) to it, for the landmark L kept in the
-- field "_L" (set by the first increment). A field with a leading "_" is stored as given,
-- undecayed: "_t" (last seen) keeps the larger of old and new, since workers' requests land
-- out of order; any other ("_m" last max_tokens, "_p" last temperature) is overwritten, the
-- last write wins. Returns 1.
-- Weights grow by 2 every half-life; past 64 of them (2^64) the sums are rescaled to a landmark
-- at now, so they stay well inside a double.
local RENORMALISE_AFTER = 64
local key = KEYS[1]
local now, half_life = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', key, '_L', '_t')
local landmark, seen = tonumber(state[1]), tonumber(state[2])

local counters = false
for i = 4, #ARGV, 2 do
  if string.sub(ARGV[i], 1, 1) ~= '_' then
    counters = true
    break
  end
end
if counters then
  if landmark == nil then
    landmark = now
    redis.call('HSET', key, '_L', ARGV[1])
  elseif now - landmark > RENORMALISE_AFTER * half_life then
    local factor = 2 ^ ((landmark - now) / half_life)
    local fields = redis.call('HGETALL', key)
    for i = 1, #fields, 2 do
      if string.sub(fields[i], 1, 1) ~= '_' then
        redis.call('HSET', key, fields[i], string.format('%.17g', tonumber(fields[i + 1]) * factor))
      end
    end
    landmark = now
    redis.call('HSET', key, '_L', ARGV[1])
  end
end

local weight = counters and 2 ^ ((now - landmark) / half_life)
for i = 4, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if string.sub(field, 1, 1) ~= '_' then
    redis.call('HINCRBYFLOAT', key, field, string.format('%.17g', tonumber(value) * weight))
  elseif field ~= '_t' or seen == nil or tonumber(value) > seen then
    redis.call('HSET', key, field, value)
  end
end
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
end
return 1
