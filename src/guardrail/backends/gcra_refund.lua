-- Give back what gcra.lua took, for a cross-slot request refused in another slot.
-- KEYS: the buckets that were charged. ARGV: now, then interval, cost for each key.
-- The TAT moves back by cost * interval, never before now (a bucket cannot hold more
-- than full); concurrent charges since then keep what they took.
local TTL_SLACK_MS = 1000  -- as in gcra.lua: a key outlives its bucket, never the reverse
local now = tonumber(ARGV[1])
for i = 1, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat ~= nil then
    local new = tat - tonumber(ARGV[2 * i]) * tonumber(ARGV[2 * i + 1])
    if new > now then
      redis.call('SET', KEYS[i], string.format('%.17g', new),
        'PX', math.ceil((new - now) * 1000) + TTL_SLACK_MS)
    else
      redis.call('DEL', KEYS[i])
    end
  end
end
return #KEYS
