-- (Loaded after the key-layout header of services/common/keys.py: key_rejected_list.)
-- Appends rejected postbacks of ONE partition of the rejected topic to the per-account lists,
-- atomically with that partition's applied-offset watermark (redelivery changes nothing).
-- KEYS[1] = applied-offset key; ARGV[1] = hash tag of the lists, ARGV[2] = records kept per
-- account, ARGV[3] = list time-to-live in ms (refreshed on every append),
-- ARGV[4..] = triples (offset, account id, record JSON).
-- Returns the number of records appended.
local watermark = tonumber(redis.call('GET', KEYS[1]) or '-1')
local keep, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local top, appended = watermark, 0
local touched = {}
for i = 4, #ARGV, 3 do
  local offset = tonumber(ARGV[i])
  if offset > watermark then
    local list = key_rejected_list(ARGV[1], ARGV[i + 1])
    redis.call('LPUSH', list, ARGV[i + 2])
    touched[list] = true
    appended = appended + 1
    if offset > top then top = offset end
  end
end
for list in pairs(touched) do
  redis.call('LTRIM', list, 0, keep - 1)
  redis.call('PEXPIRE', list, ttl)
end
if top > watermark then redis.call('SET', KEYS[1], top) end
return appended
