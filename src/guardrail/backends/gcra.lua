-- GCRA over every bucket of one request, all or nothing (transcribes base.gcra).
-- KEYS: one per bucket. ARGV[1]: now, then interval, burst, cost for each key, as one string
-- of space-separated numbers (one argument packs in a fraction of the time of 3n + 1).
-- Returns {allowed, remaining_1, reset_after_1, retry_after_1, ...}; floats travel as
-- strings because Redis truncates Lua numbers to integers.
local EPSILON = 1e-6  -- seconds; see base.EPSILON
-- A key outlives its bucket by a second: expiry runs on Redis's clock while decisions run on
-- the callers' (injected, or another host's), and a key gone early would forget what was taken.
-- A key that outlives its bucket is harmless: a TAT in the past reads as a full bucket.
local TTL_SLACK_MS = 1000
local arg = {}
for word in string.gmatch(ARGV[1], '%S+') do
  arg[#arg + 1] = tonumber(word)
end
local now = arg[1]
local n = #KEYS
local tats, news = {}, {}
local allowed = 1
for i = 1, n do
  local interval = arg[3 * i - 1]
  local burst = arg[3 * i]
  local cost = arg[3 * i + 1]
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat == nil or tat < now then
    tat = now
  end
  local new = tat + cost * interval
  if new - now > burst * interval + EPSILON then
    allowed = 0
  end
  tats[i], news[i] = tat, new
end

local result = {allowed}
for i = 1, n do
  local interval = arg[3 * i - 1]
  local tau = arg[3 * i] * interval
  local new_after = news[i] - now
  local remaining, reset_after, retry_after
  if allowed == 1 then
    if news[i] > tats[i] then  -- a cost-0 read leaves the stored TAT as it was
      -- PX so an idle bucket vanishes once it is full again; rounded up, never early
      redis.call('SET', KEYS[i], string.format('%.17g', news[i]),
        'PX', math.ceil(new_after * 1000) + TTL_SLACK_MS)
    end
    remaining = math.floor((tau - new_after + EPSILON) / interval)
    reset_after, retry_after = new_after, 0
  else
    local tat_after = tats[i] - now
    remaining = math.max(math.floor((tau - tat_after + EPSILON) / interval), 0)
    reset_after, retry_after = tat_after, math.max(0, new_after - tau)
  end
  result[#result + 1] = remaining
  result[#result + 1] = string.format('%.17g', reset_after)
  result[#result + 1] = string.format('%.17g', retry_after)
end
return result
