-- Forward-decayed counters of one risk state (a principal, a subnet, a fingerprint), kept in
-- one hash so that any worker's increment commutes with any other's (see signals/state.py).
-- KEYS[1]: the hash. KEYS[2..]: other keys of the same state (same hash tag, so one slot on a
-- cluster), the ring and the band, whose expiry is renewed with the hash: a state expires as a
-- whole, as it does in the memory store.
-- ARGV: now, half_life (s), ttl_ms, create, n, then n field/value pairs, then operations on
-- KEYS[2..]
-- (one script call per state instead of a command each: on this project's CI machine every
-- pipelined command costs redis-py ~25 µs of CPU):
--   "L", i, value, cap   push value on list KEYS[i], keep the newest cap (a ring, a bucket)
--   "S", i, value        set string KEYS[i] (the band)
--   "B", i, bit, ttl_ms  set bit in bitmap KEYS[i], which expires in its own ttl_ms
-- Every key of KEYS but bitmaps then expires in ttl_ms. A field without a leading "_" is a
-- counter: value x at time now adds x * 2^((now - L)/h) to it, for the landmark L kept in the
-- field "_L" (set by the first increment). A field with a leading "_" is stored as given,
-- undecayed: "_t" (last seen) keeps the larger of old and new, since workers' requests land
-- out of order; any other ("_m" last max_tokens, "_p" last temperature) is overwritten, the
-- last write wins. create "0": a state whose KEYS[1] does not exist is left alone (a request
-- the limits refused buys no state); returns 0 then, else 1.
-- "_H" keeps the half-life the counters were weighted with (see below).
-- Weights grow by 2 every half-life; past 64 of them (2^64) the sums are rescaled to a landmark
-- at now, so they stay well inside a double.
local RENORMALISE_AFTER = 64
local key = KEYS[1]
if ARGV[4] == '0' and redis.call('EXISTS', key) == 0 then
  return 0
end
local now, half_life = tonumber(ARGV[1]), tonumber(ARGV[2])
local last = 5 + 2 * tonumber(ARGV[5])  -- the last field/value ARGV
local landmark, seen, weighted
if last > 5 then  -- no fields: KEYS[1] may be a list (a template bucket), not a hash
  local state = redis.call('HMGET', key, '_L', '_t', '_H')
  landmark, seen, weighted = tonumber(state[1]), tonumber(state[2]), tonumber(state[3])
end

local counters = false
for i = 6, last, 2 do
  if string.sub(ARGV[i], 1, 1) ~= '_' then
    counters = true
    break
  end
end
if counters then
  -- "_H": the half-life the sums were weighted with. A policy whose half_life changed (or a
  -- rolling deploy running two) rescales them to its own instead of misreading them.
  weighted = weighted or half_life
  if landmark == nil then
    landmark = now
    redis.call('HSET', key, '_L', ARGV[1], '_H', ARGV[2])
  elseif weighted ~= half_life or now - landmark > RENORMALISE_AFTER * half_life then
    local factor = 2 ^ ((landmark - now) / weighted)
    local fields = redis.call('HGETALL', key)
    for i = 1, #fields, 2 do
      if string.sub(fields[i], 1, 1) ~= '_' then
        redis.call('HSET', key, fields[i], string.format('%.17g', tonumber(fields[i + 1]) * factor))
      end
    end
    landmark = now
    redis.call('HSET', key, '_L', ARGV[1], '_H', ARGV[2])
  end
end

local weight = counters and 2 ^ ((now - landmark) / half_life)
for i = 6, last, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if string.sub(field, 1, 1) ~= '_' then
    redis.call('HINCRBYFLOAT', key, field, string.format('%.17g', tonumber(value) * weight))
  elseif field ~= '_t' or seen == nil or tonumber(value) > seen then
    redis.call('HSET', key, field, value)
  end
end
local bitmaps = {}
local i = last + 1
while i <= #ARGV do
  local op, target = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  if op == 'L' then
    redis.call('LPUSH', target, ARGV[i + 2])
    redis.call('LTRIM', target, 0, tonumber(ARGV[i + 3]) - 1)
    i = i + 4
  elseif op == 'S' then
    redis.call('SET', target, ARGV[i + 2])
    i = i + 3
  elseif op == 'B' then
    redis.call('SETBIT', target, ARGV[i + 2], 1)
    bitmaps[target] = ARGV[i + 3]
    i = i + 4
  else
    return redis.error_reply('risk.lua: unknown operation ' .. tostring(op))
  end
end
for k = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[k], bitmaps[KEYS[k]] or ARGV[3])
end
return 1
