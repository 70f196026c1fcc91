-- The forward-map bucket of an install id: the first 32 bits of its SHA-1 (redis.sha1hex, in C)
-- mod 4,096 - identical to services/common/keys.py device_index_bucket (shared test vectors:
-- tests/unit/device_bucket_vectors.json, run here by tests/integration/test_processor_device_layout.py).
-- SHA-1 rather than a hash written in Lua: FNV-1a in Lua cost ~3.5 us per install id, this ~0.7 us.
-- Prepended to apply_batch.lua by store.py.
local INDEX_BUCKETS = 4096  -- keys.DEVICE_INDEX_BUCKETS

local function device_bucket(install)
  return tonumber(string.sub(redis.sha1hex(install), 1, 8), 16) % INDEX_BUCKETS
end
