-- One page of the matching devices of one partition, in device-number order
-- (prelude: segment_filter.lua). ARGV[extra] = first device number to look at,
-- ARGV[extra + 1] = at most this many devices.
-- Returns {next, n1, id1, n2, id2, ...}: `next` is the number of the next matching device
-- after the page, or -1 when the partition has no more; ids come from the reverse map.
build_filter()
local pos, limit = tonumber(ARGV[extra]), tonumber(ARGV[extra + 1])
local out = {-1}
local found = 0
while true do
  local bit = redis.call('BITPOS', scratch, 1, pos, -1, 'BIT')
  if bit < 0 then break end
  if found == limit then out[1] = bit break end
  local name = redis.call('HGET', key_device_names(tag, acct, math.floor(bit / NAMES_BUCKET)), bit % NAMES_BUCKET)
  out[#out + 1] = bit
  out[#out + 1] = name or ''
  found = found + 1
  pos = bit + 1
end
redis.call('DEL', scratch)
return out
