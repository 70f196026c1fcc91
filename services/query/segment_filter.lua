-- Shared prelude of segment_count.lua and segment_page.lua (prepended when loaded, after the
-- key-layout header of services/common/keys.py: key_segment, NAMES_BUCKET, ...).
-- Builds into KEYS[1] (a scratch key in the partition's hash tag) the bitmap of the devices of
-- one account and partition that match a filter; KEYS[2] = a second scratch key (exclusions).
-- ARGV[1] = partition tag, ARGV[2] = account id, ARGV[3] = 'all' | 'any',
-- ARGV[4] = TTL of the scratch keys in ms, ARGV[5] = number of included codes n,
-- ARGV[6] = number of excluded codes m, ARGV[7] = number of required codes r (conditions: each must
-- have occurred, whatever ARGV[3] says), ARGV[8..7+n] = included codes, ARGV[8+n..7+n+m] = excluded
-- codes, ARGV[8+n+m..7+n+m+r] = required codes, the rest = script-specific.
-- An empty include list means every device of the account (the `install` bitmap).
-- Each scratch key gets its TTL right after it is made: a script that fails later (its writes
-- stay) leaves nothing that outlives the TTL; the scripts delete them on success.
local tag, acct, mode = ARGV[1], ARGV[2], ARGV[3]
local scratch_ttl = ARGV[4]
local n_in, n_ex, n_req = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local scratch = KEYS[1]
local first_in, first_ex, first_req = 8, 8 + n_in, 8 + n_in + n_ex
local extra = 8 + n_in + n_ex + n_req
local function seg(code) return key_segment(tag, acct, code) end
local function build_filter()
  local include = {}
  for i = first_in, first_ex - 1 do include[#include + 1] = seg(ARGV[i]) end
  if #include == 0 then include[1] = seg('install') end
  redis.call('BITOP', mode == 'any' and 'OR' or 'AND', scratch, unpack(include))
  redis.call('PEXPIRE', scratch, scratch_ttl)
  if n_req > 0 then
    local required = {scratch}
    for i = first_req, extra - 1 do required[#required + 1] = seg(ARGV[i]) end
    redis.call('BITOP', 'AND', scratch, unpack(required))  -- a missing bitmap is all zeros
    redis.call('PEXPIRE', scratch, scratch_ttl)
  end
  if n_ex > 0 then
    local exclude = {}
    for i = first_ex, first_req - 1 do exclude[#exclude + 1] = seg(ARGV[i]) end
    local ex = KEYS[2]
    -- X AND NOT Y == X XOR (X AND Y): immune to bitmaps of different lengths.
    if #exclude == 1 then
      redis.call('BITOP', 'AND', ex, scratch, exclude[1])
    else
      redis.call('BITOP', 'OR', ex, unpack(exclude))
      redis.call('PEXPIRE', ex, scratch_ttl)
      redis.call('BITOP', 'AND', ex, ex, scratch)
    end
    redis.call('PEXPIRE', ex, scratch_ttl)  -- again: BITOP's destination loses its TTL
    redis.call('BITOP', 'XOR', scratch, scratch, ex)
    redis.call('PEXPIRE', scratch, scratch_ttl)  -- BITOP's destination loses its TTL
    redis.call('DEL', ex)
  end
end
