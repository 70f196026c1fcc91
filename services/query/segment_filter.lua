-- Shared prelude of segment_count.lua and segment_page.lua (prepended when loaded, after the
-- key-layout header of services/common/keys.py: key_segment, NAMES_BUCKET, ...).
-- Builds into KEYS[1] (a scratch key in the partition's hash tag) the bitmap of the devices of
-- one account and partition that match a filter; KEYS[2] = a second scratch key (exclusions).
-- ARGV[1] = partition tag, ARGV[2] = account id, ARGV[3] = 'all' | 'any',
-- ARGV[4] = number of included codes n, ARGV[5] = number of excluded codes m,
-- ARGV[6..5+n] = included codes, ARGV[6+n..5+n+m] = excluded codes, the rest = script-specific.
-- An empty include list means every device of the account (the `install` bitmap).
local tag, acct, mode = ARGV[1], ARGV[2], ARGV[3]
local n_in, n_ex = tonumber(ARGV[4]), tonumber(ARGV[5])
local scratch = KEYS[1]
local extra = 6 + n_in + n_ex
local function seg(code) return key_segment(tag, acct, code) end
local function build_filter()
  local include = {}
  for i = 6, 5 + n_in do include[#include + 1] = seg(ARGV[i]) end
  if #include == 0 then include[1] = seg('install') end
  redis.call('BITOP', mode == 'any' and 'OR' or 'AND', scratch, unpack(include))
  if n_ex > 0 then
    local exclude = {}
    for i = 6 + n_in, 5 + n_in + n_ex do exclude[#exclude + 1] = seg(ARGV[i]) end
    local ex = KEYS[2]
    -- X AND NOT Y == X XOR (X AND Y): immune to bitmaps of different lengths.
    if #exclude == 1 then
      redis.call('BITOP', 'AND', ex, scratch, exclude[1])
    else
      redis.call('BITOP', 'OR', ex, unpack(exclude))
      redis.call('BITOP', 'AND', ex, ex, scratch)
    end
    redis.call('BITOP', 'XOR', scratch, scratch, ex)
    redis.call('DEL', ex)
  end
end
