-- Risk state in Redis: the two functions risk.lua, risk_read.lua and risk_sync.lua are made of
-- (this file is put before each of them: one copy of the logic, three scripts).
--
-- apply(keys, now, half_life, ttl_ms, create, fields, ops, me, stamp): forward-decayed counters
-- of one risk state (a principal, a subnet, a fingerprint), kept in one hash so that any
-- worker's increment commutes with any other's (see signals/state.py). keys[1]: the hash;
-- keys[2..]: other keys of the same state (same hash tag, so one slot on a cluster), the ring
-- and the band, whose expiry is renewed with the hash: a state expires as a whole, as it does
-- in the memory store.
-- now and half_life are passed as the text they are stored as; fields: field, value, field,
-- value...; ops: operations on keys[2..]:
--   "L", i, value, cap   push value on list keys[i], keep the newest cap (a ring, a bucket)
--   "S", i, band, hold   set string keys[i] (the band, "level:held"), as ``kept`` merges it
--   "B", i, bit, ttl_ms  set bit in bitmap keys[i], which expires in its own ttl_ms
-- Every key but bitmaps then expires in ttl_ms. A field without a leading "_" is a counter:
-- value x at time now adds x * 2^((now - L)/h) to it, for the landmark L kept in the field "_L"
-- (set by the first increment). A field "^x" (the part of counter x a repair put back:
-- Update.restore) is raised to its value that way, never lowered, and x by as much: each
-- worker that held a state Redis lost repairs it, and the loss must count once. x stays the
-- whole count, so a worker of an earlier release reads it right.
-- A field with a leading "_" is stored as given, undecayed: "_t"
-- (last seen) keeps the larger of old and new, since workers' requests land out of order; any
-- other ("_m" last max_tokens, "_p" last temperature) is overwritten, the last write wins.
-- create false: a state whose keys[1] does not exist is left alone (a request the limits refused
-- buys no state); returns 0 then, else 1 and the hash's stamp before the write (field "_w", a
-- worker's name: risk_sync.lua). stamp "m" stamps the hash ``me``'s, "u" takes another
-- worker's stamp off it, nil leaves it. "_H" keeps the half-life the counters were weighted
-- with (see below). Weights grow by 2 every half-life; past 64 of them (2^64) the sums are
-- rescaled to a landmark at now, so they stay well inside a double.
--
-- read(keys, lists): {HGETALL keys[1], LRANGE 0 -1 of keys[2..1+lists], MGET of the rest}.
local RENORMALISE_AFTER = 64
local BITFIELD_ARGUMENTS = 4000  -- 1,000 bits a call

-- A value as Redis stores it: a Lua number passed to redis.call would be truncated to an integer.
local function text(value)
  if type(value) == 'number' then
    return string.format('%.17g', value)
  end
  return value
end

-- Whether a band ("level:held") written now replaces the one Redis holds. Workers decide from
-- copies that may be behind, and hysteresis steps a band down only once its hold (the
-- cooldown, ``hold``) has run out since it was last held: so a lower band whose held is within
-- the higher one's hold comes from a copy that had not seen the higher (it stays), and a higher
-- band is replaced by a lower one held after its hold ran out (a step down that a late write
-- of the higher must not undo). Within a level, the later held. No hold: the last write wins.
local function kept(band, old, hold)
  if not (hold and hold > 0) then
    return true
  end
  local level, held = string.match(band, '^(-?%d+):(.+)$')
  local old_level, old_held = string.match(old, '^(-?%d+):(.+)$')
  level, held = tonumber(level), tonumber(held)
  old_level, old_held = tonumber(old_level), tonumber(old_held)
  if not (old_level and old_held) then
    return true  -- not a band this script wrote: replaced
  end
  if level == old_level then
    return held >= old_held
  elseif level > old_level then
    return old_held < held + hold
  end
  return held >= old_held + hold
end

local function apply(keys, now_text, half_life_text, ttl_ms, create, fields, ops, me, stamp)
  local key = keys[1]
  if not create and redis.call('EXISTS', key) == 0 then
    return 0
  end
  local now, half_life = tonumber(now_text), tonumber(half_life_text)
  -- One HMGET and one HSET a hash, whatever its fields: each command a script runs costs
  -- Redis ~1.5 µs on top of its work, and a flush writes a principal a request.
  local counters = {}  -- the counters written, each once: {field, stored value}
  local landmark, seen, weighted, stamped
  if #fields > 0 or stamp then  -- no fields: keys[1] may be a list (a bucket), not a hash
    local asked = {'_L', '_t', '_H', '_w'}
    local function ask(field)
      counters[#counters + 1] = field
      asked[#asked + 1] = field
    end
    for i = 1, #fields, 2 do
      local field = fields[i]
      local first = string.sub(field, 1, 1)
      if first == '^' then  -- a restored part raises its counter too
        ask(field)
        ask(string.sub(field, 2))
      elseif first ~= '_' then
        ask(field)
      end
    end
    local state = redis.call('HMGET', key, unpack(asked))
    landmark, seen, weighted = tonumber(state[1]), tonumber(state[2]), tonumber(state[3])
    stamped = state[4]
    for c = 1, #counters do
      counters[c] = {counters[c], tonumber(state[4 + c]) or 0}
    end
  end

  local set = {}
  if #counters > 0 then
    -- "_H": the half-life the sums were weighted with. A policy whose half_life changed (or a
    -- rolling deploy running two) rescales them to its own instead of misreading them.
    weighted = weighted or half_life
    local factor = nil  -- the sums rescaled to a landmark at now
    if landmark == nil then
      landmark = now
      set = {'_L', now_text, '_H', half_life_text}
    elseif weighted ~= half_life or now - landmark > RENORMALISE_AFTER * half_life then
      factor = 2 ^ ((landmark - now) / weighted)
      landmark = now
      set = {'_L', now_text, '_H', half_life_text}
    end
    local weight = 2 ^ ((now - landmark) / half_life)
    local sums = {}  -- by field (a counter asked twice, with a restored part and alone: once)
    for c = 1, #counters do
      sums[counters[c][1]] = counters[c][2] * (factor or 1)
    end
    for i = 1, #fields, 2 do
      local field = fields[i]
      local first = string.sub(field, 1, 1)
      if first == '^' then
        -- raised, never lowered, and the counter (the whole count) with it: every worker
        -- that held a state Redis lost repairs it, and the loss counts once
        local raised = tonumber(fields[i + 1]) * weight - sums[field]
        if raised > 0 then
          local whole = string.sub(field, 2)
          sums[field] = sums[field] + raised
          sums[whole] = sums[whole] + raised
        end
      elseif first ~= '_' then
        sums[field] = sums[field] + tonumber(fields[i + 1]) * weight
      end
    end
    for c = 1, #counters do
      local field = counters[c][1]
      local sum = sums[field]
      if sum ~= sum or sum == math.huge or sum == -math.huge then
        -- as HINCRBYFLOAT refused it: nothing of this state written, not "inf" stored
        return redis.error_reply('risk: counter ' .. field .. ' would not be finite')
      end
      if sum ~= nil then
        sums[field] = nil  -- written once
        set[#set + 1] = field
        set[#set + 1] = text(sum)
      end
    end
    if factor then  -- only once the write is known to go ahead: with its new landmark
      local all = redis.call('HGETALL', key)
      for i = 1, #all, 2 do
        if string.sub(all[i], 1, 1) ~= '_' then
          redis.call('HSET', key, all[i], text(tonumber(all[i + 1]) * factor))
        end
      end
    end
  end
  for i = 1, #fields, 2 do
    local field, value = fields[i], fields[i + 1]
    local kept = field ~= '_t' or seen == nil or tonumber(value) > seen
    if string.sub(field, 1, 1) == '_' and kept then
      set[#set + 1] = field
      set[#set + 1] = text(value)
    end
  end
  if stamp == 'm' then
    set[#set + 1] = '_w'
    set[#set + 1] = me
  elseif stamp == 'u' and stamped and stamped ~= me then
    redis.call('HDEL', key, '_w')
  end
  if #set > 0 then
    redis.call('HSET', key, unpack(set))
  end

  -- Bits go one BITFIELD a bitmap: a cohort's flush sets one for each of its members.
  local bitmaps, bits = {}, {}
  local i = 1
  while i <= #ops do
    local op, target = ops[i], keys[tonumber(ops[i + 1])]
    if op == 'L' then
      redis.call('LPUSH', target, ops[i + 2])
      redis.call('LTRIM', target, 0, tonumber(ops[i + 3]) - 1)
      i = i + 4
    elseif op == 'S' then
      local band = ops[i + 2]
      local old = redis.call('GET', target)
      if not old or kept(band, old, tonumber(ops[i + 3])) then
        redis.call('SET', target, band)
      end
      i = i + 4
    elseif op == 'B' then
      local set_bits = bits[target]
      if set_bits == nil then
        set_bits = {}
        bits[target] = set_bits
        bits[#bits + 1] = target
      end
      set_bits[#set_bits + 1] = 'SET'
      set_bits[#set_bits + 1] = 'u1'
      set_bits[#set_bits + 1] = ops[i + 2]
      set_bits[#set_bits + 1] = 1
      bitmaps[target] = ops[i + 3]
      i = i + 4
    else
      return redis.error_reply('risk: unknown operation ' .. tostring(op))
    end
  end
  for b = 1, #bits do
    local target, all = bits[b], bits[bits[b]]
    for first = 1, #all, BITFIELD_ARGUMENTS do  -- in parts: unpack stops at ~8,000 values
      local last = math.min(first + BITFIELD_ARGUMENTS - 1, #all)
      redis.call('BITFIELD', target, unpack(all, first, last))
    end
  end
  for k = 1, #keys do
    redis.call('PEXPIRE', keys[k], bitmaps[keys[k]] or ttl_ms)
  end
  return 1, stamped
end

local function read(keys, lists)
  local out = {redis.call('HGETALL', keys[1])}
  for i = 2, 1 + lists do
    out[#out + 1] = redis.call('LRANGE', keys[i], 0, -1)
  end
  if #keys > 1 + lists then
    out[#out + 1] = redis.call('MGET', unpack(keys, 2 + lists))
  end
  return out
end
