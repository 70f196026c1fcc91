-- Devices per event code in one partition: every code in the account's codes set, BITCOUNTed.
-- KEYS[1] = the codes set of the account in this partition; ARGV[1] = partition tag, ARGV[2] = account.
-- Returns {code1, count1, code2, count2, ...}. One script instead of one command per code keeps
-- the overview at one round trip with 8 replies however many events there are.
local out = {}
for _, code in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  out[#out + 1] = code
  out[#out + 1] = redis.call('BITCOUNT', ARGV[1] .. ':s:' .. ARGV[2] .. ':' .. code)
end
return out
