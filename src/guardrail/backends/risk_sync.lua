-- A worker's flush (backends/risk_shared.py), risk_state.lua's functions before this: the
-- writes of many states and the read of each, in one call.
-- KEYS: each state's hash (or list, for a template bucket), in the order of the spec; then,
-- when the call writes, its marker: a key of the same slot named for this part of this flush.
-- ARGV[1] now, ARGV[2] half_life, ARGV[3] ttl_ms, ARGV[4] the worker's name, ARGV[5] the spec
-- (JSON), ARGV[6] how long the marker is kept (ms), ARGV[7..] the entries its "L" operations
-- push (binary: sketches), referred to by number (1: ARGV[7]).
-- A call whose marker is already there ran before (its reply was lost, and the worker sent
-- the same part of the same flush again): it writes nothing and reads as usual.
-- The spec is a list, one object per state: "x" the suffixes of its other keys (its keys are
-- KEYS[s] and KEYS[s] .. suffix: one hash tag, one slot); "w" (a write) with "c" create,
-- "f" fields, "o" operations as apply takes them (key numbers into the state's keys), "t" its
-- own ttl_ms if not ARGV[3]'s (a template bucket: its entries count for a window); then "r"
-- the suffixes of the keys read and "l" how many of them are lists (read(KEYS[s] and those)),
-- or "b": a template bucket, read with LRANGE. A written hash (a principal, a cohort: "m") is
-- stamped with the worker's name in its field "_w"; with "q", a hash whose stamp was already
-- this worker's is not read (0 in its place): nobody else wrote it since this worker last read
-- it back, so its copy is Redis's. With "u" instead of "m" (a flush that reads nothing back) a
-- written hash loses any other worker's stamp and keeps this one's: that worker's copy no
-- longer holds everything written. A state with "z" is written and not read (0).
-- Returns one reply per state, what read (or LRANGE) returns, or 0, or an error: a state Redis
-- refuses (a key of another type under the prefix, another program's; a counter that would
-- not be finite) costs that state alone. A script stopped there would leave the states after
-- it unwritten, and the batch sent again would find its marker and write nothing.
local me = ARGV[4]

-- Only a key of the wrong type is taken so (apply returns its own refusals, it does not raise
-- them): anything else (a Redis out of memory, a replica) stops the call as before, and the
-- worker sends the batch again.
local function refused(err)
  local message = tostring(type(err) == 'table' and err.err or err)
  if not string.find(message, 'WRONGTYPE', 1, true) then
    error(err)
  end
  return redis.error_reply('risk: ' .. message)
end

local spec = cjson.decode(ARGV[5])
local out = {}
local marker = KEYS[#spec + 1]
local replay = marker and not redis.call('SET', marker, 1, 'NX', 'PX', ARGV[6])
if replay then
  redis.call('PEXPIRE', marker, ARGV[6])  -- kept while the batch is still being sent again
end
for s, state in ipairs(spec) do
  local base = KEYS[s]
  if state.w and not replay then
    local keys = {base}
    for _, suffix in ipairs(state.x) do
      keys[#keys + 1] = base .. suffix
    end
    local ops = state.o
    local i = 1
    while i <= #ops do
      if ops[i] == 'L' then
        ops[i + 2] = ARGV[6 + ops[i + 2]]
      end
      i = i + 4
    end
    local stamp = (state.m and 'm') or (state.u and 'u') or nil
    local ttl_ms = state.t or ARGV[3]
    local ok, done, stamped = pcall(
      apply, keys, ARGV[1], ARGV[2], ttl_ms, state.c, state.f, ops, me, stamp
    )
    if not ok then
      out[s] = refused(done)
      pcall(redis.call, 'PEXPIRE', base, ttl_ms)  -- written part way: it expires all the same
    elseif type(done) == 'table' then
      out[s] = done  -- refused by apply (a counter that would not be finite, before any write)
    elseif state.q and stamped == me then
      out[s] = 0  -- stamped this worker's before this write: unchanged since it read it
    end
  end
  if out[s] then
    -- refused, or not read: unchanged
  elseif state.z then
    out[s] = 0  -- not asked for
  elseif state.b then
    local ok, entries = pcall(redis.call, 'LRANGE', base, 0, state.b - 1)
    out[s] = ok and entries or refused(entries)
  else
    local keys = {base}
    for _, suffix in ipairs(state.r) do
      keys[#keys + 1] = base .. suffix
    end
    local ok, got = pcall(read, keys, state.l)
    out[s] = ok and got or refused(got)
  end
end
return out
