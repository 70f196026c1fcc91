-- Counts the devices of one partition that match a filter, from the segment bitmaps.
-- KEYS[1] = a scratch key in the partition's hash tag (deleted before returning)
-- ARGV[1] = partition tag, ARGV[2] = account id, ARGV[3] = 'all' | 'any',
-- ARGV[4] = number of included codes n, ARGV[5..4+n] = included codes, the rest = excluded codes.
-- An empty include list means every device of the account (the `install` bitmap).
local tag, acct, mode, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local scratch = KEYS[1]
local function seg(code) return tag .. ':s:' .. acct .. ':' .. code end
local include = {}
for i = 5, 4 + n do include[#include + 1] = seg(ARGV[i]) end
if #include == 0 then include[1] = seg('install') end
redis.call('BITOP', mode == 'any' and 'OR' or 'AND', scratch, unpack(include))
if #ARGV > 4 + n then
  local exclude = {}
  for i = 5 + n, #ARGV do exclude[#exclude + 1] = seg(ARGV[i]) end
  local ex = scratch .. ':x'
  -- X AND NOT Y == X XOR (X AND Y): immune to bitmaps of different lengths.
  redis.call('BITOP', 'OR', ex, unpack(exclude))
  redis.call('BITOP', 'AND', ex, ex, scratch)
  redis.call('BITOP', 'XOR', scratch, scratch, ex)
  redis.call('DEL', ex)
end
local count = redis.call('BITCOUNT', scratch)
redis.call('DEL', scratch)
return count
