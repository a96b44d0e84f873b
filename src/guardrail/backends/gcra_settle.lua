-- Move buckets by a signed amount, unconditionally (transcribes base.settle).
-- KEYS: the buckets. ARGV[1]: now, then interval, amount for each key, space-separated (as
-- gcra.lua's).
-- A negative amount gives back (a refused cross-slot charge, a token reservation the response
-- did not use): the TAT moves back, never before now, since a bucket holds no more than full;
-- what concurrent requests took meanwhile stays taken. A positive amount takes more (a
-- response that used more tokens than it reserved), even past the burst: the bucket goes into
-- debt and admits nothing until it has refilled.
local TTL_SLACK_MS = 1000  -- as in gcra.lua: a key outlives its bucket, never the reverse
local arg = {}
for word in string.gmatch(ARGV[1], '%S+') do
  arg[#arg + 1] = tonumber(word)
end
local now = arg[1]
for i = 1, #KEYS do
  local amount = arg[2 * i + 1]
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat == nil or tat < now then
    tat = now
  end
  local new = tat + amount * arg[2 * i]
  if new > now then
    redis.call('SET', KEYS[i], string.format('%.17g', new),
      'PX', math.ceil((new - now) * 1000) + TTL_SLACK_MS)
  elseif amount < 0 then
    redis.call('DEL', KEYS[i])
  end
end
return #KEYS
