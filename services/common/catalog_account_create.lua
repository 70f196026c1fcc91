-- Stores a new account and its first API key under an id the id log allocated
-- (services/domain/catalog_ids.py), atomically with the catalog version bump.
-- KEYS[1] = accounts hash, KEYS[2] = api_keys hash, KEYS[3] = account id sequence (the highest
-- id stored), KEYS[4] = catalog version
-- ARGV[1] = account id, ARGV[2] = account JSON, ARGV[3] = sha256 of the API key, ARGV[4] = key JSON,
-- ARGV[5] = '1' to restore a logged account (`pbseg catalog check --restore`): any id not stored yet
-- Returns 1, or the error reply 'id_taken <highest id stored>' when the id is not above every id
-- the catalog holds (the log was recreated, or the catalog predates it): the caller allocates again.
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
local id = tonumber(ARGV[1])
if (id <= seq and ARGV[5] ~= '1') or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return redis.error_reply('id_taken ' .. math.max(seq, id))
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('SET', KEYS[3], math.max(id, seq))
redis.call('INCR', KEYS[4])
return 1
