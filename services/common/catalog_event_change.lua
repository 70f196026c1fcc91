-- Changes one custom event atomically and bumps the catalog version.
-- KEYS[1] = events hash of the account, KEYS[2] = event_codes hash, KEYS[3] = catalog version,
-- KEYS[4] = set of deleted event ids (so `pbseg catalog check` does not take them for lost)
-- ARGV[1] = event id, ARGV[2] = 'delete' | 'status' | 'name', ARGV[3] = new value, ARGV[4] = now ms
-- Returns the event JSON after the change ('' after delete), or an error reply 'not_found'.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return redis.error_reply('not_found') end
local event = cjson.decode(raw)
if ARGV[2] == 'delete' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], string.lower(event.code))
  redis.call('SADD', KEYS[4], ARGV[1])
  redis.call('INCR', KEYS[3])
  return ''
end
local changed = false
if ARGV[2] == 'status' then
  local status = tonumber(ARGV[3])
  changed = event.status ~= status
  event.status = status
elseif ARGV[2] == 'name' then
  changed = event.name ~= ARGV[3]
  event.name = ARGV[3]
end
if changed then
  event.updated_at = tonumber(ARGV[4])
  raw = cjson.encode(event)
  redis.call('HSET', KEYS[1], ARGV[1], raw)
  redis.call('INCR', KEYS[3])
end
return raw
