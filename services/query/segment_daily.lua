-- Devices of one account and partition on which a code occurred, per UTC day (the windowed
-- index's day buckets; prelude: the key-layout header). KEYS[1] = any key of the partition's
-- hash tag (routes the call on Redis Cluster; not touched). ARGV[1] = partition tag,
-- ARGV[2] = account id, ARGV[3] = code, ARGV[4..] = day buckets ("d<unix ms // 1 d>").
-- Returns one count per day: BITCOUNT of the bucket's bitmap, else SCARD of its set.
local tag, acct, code = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV do
  local bits = key_window_bits(tag, acct, code, ARGV[i])
  if redis.call('EXISTS', bits) == 1 then
    out[#out + 1] = redis.call('BITCOUNT', bits)
  else
    out[#out + 1] = redis.call('SCARD', key_window_set(tag, acct, code, ARGV[i]))
  end
end
return out
