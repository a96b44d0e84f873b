-- One write of one risk state (risk_state.lua's apply, before this). KEYS: the state's keys;
-- ARGV: now, half_life (s), ttl_ms, create ("0" or "1"), n, then n field/value pairs, then
-- the operations on KEYS[2..]. (One script call per state instead of a command each: on this
-- project's CI machine every pipelined command costs redis-py ~25 µs of CPU.)
local n = tonumber(ARGV[5])
local fields, ops = {}, {}
for i = 6, 5 + 2 * n do
  fields[#fields + 1] = ARGV[i]
end
for i = 6 + 2 * n, #ARGV do
  ops[#ops + 1] = ARGV[i]
end
local done = apply(KEYS, ARGV[1], ARGV[2], ARGV[3], ARGV[4] ~= '0', fields, ops)
return done
