-- Reads one risk state in one call (one command instead of three: each pipelined command costs
-- redis-py ~25 µs of CPU on this project's CI machine).
-- KEYS[1]: the state's hash; ARGV[1] = n: KEYS[2..1+n] are lists, read whole (LRANGE 0 -1;
-- they are capped when written); the rest of KEYS are strings, read with MGET.
-- Returns {HGETALL of KEYS[1], one LRANGE per list..., MGET of the strings (if any)}.
local out = {redis.call('HGETALL', KEYS[1])}
local lists = tonumber(ARGV[1])
for i = 2, 1 + lists do
  out[#out + 1] = redis.call('LRANGE', KEYS[i], 0, -1)
end
if #KEYS > 1 + lists then
  out[#out + 1] = redis.call('MGET', unpack(KEYS, 2 + lists))
end
return out
