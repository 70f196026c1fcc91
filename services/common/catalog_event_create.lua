-- Creates a custom event atomically under an id the id log allocated (services/domain/catalog_ids.py):
-- code uniqueness (case-insensitive), the per-account limit, the id and the catalog version bump
-- happen together or not at all.
-- KEYS[1] = events hash of the account, KEYS[2] = event_codes hash of the account,
-- KEYS[3] = event id sequence (the highest id stored minus ARGV[5]), KEYS[4] = catalog version
-- ARGV[1] = name, ARGV[2] = code, ARGV[3] = now ms, ARGV[4] = max custom events per account,
-- ARGV[5] = first custom id minus one (ids below it belong to the system events), ARGV[6] = the allocated id,
-- ARGV[7] = '1' to restore a logged event (`pbseg catalog check --restore`): any id not stored yet
-- Returns the id, or an error reply 'duplicate_code <id>' / 'event_limit' / 'id_taken <highest id
-- stored>' (the id is not above every id the catalog holds: the caller allocates again).
local existing = redis.call('HGET', KEYS[2], string.lower(ARGV[2]))
if existing then return redis.error_reply('duplicate_code ' .. existing) end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return redis.error_reply('event_limit') end
local base = tonumber(ARGV[5])
local highest = tonumber(redis.call('GET', KEYS[3]) or '0') + base
local id = tonumber(ARGV[6])
if id <= highest and ARGV[7] ~= '1' then return redis.error_reply('id_taken ' .. highest) end
local event = cjson.encode({id = id, name = ARGV[1], code = ARGV[2], status = 1,
  created_at = tonumber(ARGV[3]), updated_at = tonumber(ARGV[3])})
redis.call('HSET', KEYS[1], id, event)
redis.call('HSET', KEYS[2], string.lower(ARGV[2]), id)
redis.call('SET', KEYS[3], math.max(id, highest) - base)
redis.call('INCR', KEYS[4])
return id
