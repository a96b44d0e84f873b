-- Reads one risk state in one call (risk_state.lua's read, before this): one command instead
-- of three (each pipelined command costs redis-py ~25 µs of CPU on this project's CI machine).
-- KEYS[1]: the state's hash; ARGV[1] = n: KEYS[2..1+n] are lists, read whole (they are capped
-- when written); the rest of KEYS are strings, read with MGET.
return read(KEYS, tonumber(ARGV[1]))
