-- Counts the devices of one partition that match a filter (prelude: segment_filter.lua).
-- Returns the count; the scratch key is deleted before returning.
build_filter()
local count = redis.call('BITCOUNT', scratch)
redis.call('DEL', scratch)
return count
