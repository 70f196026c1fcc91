-- Shared prelude of segment_count.lua and segment_page.lua (prepended when loaded, after the
-- key-layout header of services/common/keys.py: key_segment, NAMES_BUCKET, ...).
-- Builds into KEYS[1] (a scratch key in the partition's hash tag) the bitmap of the devices of
-- one account and partition that match a filter; KEYS[2] = a second scratch key (exclusions).
-- ARGV[1] = partition tag, ARGV[2] = account id, ARGV[3] = 'all' | 'any',
-- ARGV[4] = TTL of the scratch keys in ms, ARGV[5] = number of included codes n,
-- ARGV[6] = number of excluded codes m, ARGV[7] = number of required codes r (conditions: each must
-- have occurred, whatever ARGV[3] says), ARGV[8] = the index steps, a JSON array ANDed after the
-- codes (services/query/segments.py `program`), each [kind, negate 0/1, ...]:
--   ["w", neg, code, [bucket, ...], [[day, [hour, ...], [other hour, ...]], ...]]  the union of the
--                                     code's windowed buckets (device sets: key_window_bits when it
--                                     exists, else key_window_set), then of each edge day's hours -
--                                     or of the whole day when none of its other hours holds any
--                                     device (the same devices: one bitmap instead of many sets)
--   ["k", neg, code, min, max]       ZRANGEBYSCORE of the code's count rank
--   ["s", neg, currency, min, max]   ZRANGEBYLEX of the currency's deposit sums ("<sum>:<number>")
-- ARGV[9..8+n] = included codes, ARGV[9+n..8+n+m] = excluded codes, ARGV[9+n+m..8+n+m+r] =
-- required codes, the rest = script-specific.
-- An empty include list means every device of the account (the `install` bitmap).
-- Each scratch key gets its TTL right after it is made: a script that fails later (its writes
-- stay) leaves nothing that outlives the TTL; the scripts delete them on success.
local tag, acct, mode = ARGV[1], ARGV[2], ARGV[3]
local scratch_ttl = ARGV[4]
local n_in, n_ex, n_req = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local scratch = KEYS[1]
local program = ARGV[8]
local first_in, first_ex, first_req = 9, 9 + n_in, 9 + n_in + n_ex
local extra = 9 + n_in + n_ex + n_req
local function seg(code) return key_segment(tag, acct, code) end

-- Members of sets (device numbers as decimal strings) are gathered per 32-bit word first and
-- written with one BITFIELD SET i32 per word: devices numbered close together (those a day's
-- `reg` creates) cost one write per 32, not one each. Bit n is the MSB-first bit n % 32 of word
-- n // 32, as SETBIT; the i32 value is the word's bits read as a signed number.
local bor, lshift, floor, sub = bit.bor, bit.lshift, math.floor, string.sub
local function gather(words, order, numbers, strip)
  local norder = #order
  for i = 1, #numbers do
    local n = tonumber(strip and sub(numbers[i], strip) or numbers[i])
    local k = floor(n / 32)
    local w = words[k]
    if not w then
      norder = norder + 1
      order[norder] = k
      w = 0
    end
    words[k] = bor(w, lshift(1, 31 - (n - k * 32)))
  end
end

local function or_into(tmp, dense)
  -- tmp |= every bitmap of `dense`. BITOP's word-at-a-time loop runs only with at most 16 keys
  -- and only up to the shortest one's length (byte by byte after): so OR bitmaps of similar
  -- length (sorted by STRLEN) 15 at a time into partial results, then the partials into tmp.
  if #dense == 0 then return end
  if #dense <= 15 then
    redis.call('BITOP', 'OR', tmp, tmp, unpack(dense))
    redis.call('PEXPIRE', tmp, scratch_ttl)
    return
  end
  local lens = {}
  for _, k in ipairs(dense) do lens[k] = redis.call('STRLEN', k) end
  table.sort(dense, function(a, b) return lens[a] < lens[b] end)
  local partials = {tmp}
  for i = 1, #dense, 15 do
    local part = tmp .. ':' .. #partials
    redis.call('BITOP', 'OR', part, unpack(dense, i, math.min(i + 14, #dense)))
    redis.call('PEXPIRE', part, scratch_ttl)
    partials[#partials + 1] = part
  end
  for i = 2, #partials, 15 do
    redis.call('BITOP', 'OR', tmp, tmp, unpack(partials, i, math.min(i + 14, #partials)))
    redis.call('PEXPIRE', tmp, scratch_ttl)
  end
  redis.call('DEL', unpack(partials, 2))
end

local function write_words(key, words, order)
  -- the gathered words into the (absent) bitmap `key`, ~1,000 arguments per call
  for i = 1, #order, 250 do
    local args = {}
    for j = i, math.min(i + 249, #order) do
      local k, n = order[j], #args
      args[n + 1], args[n + 2], args[n + 3], args[n + 4] = 'SET', 'i32', string.format('%d', k * 32), words[k]
    end
    redis.call('BITFIELD', key, unpack(args))
  end
  if #order > 0 then redis.call('PEXPIRE', key, scratch_ttl) end
end

local function step_into(tmp, step)
  -- the devices of one step into the (absent) bitmap `tmp`
  local kind = step[1]
  local words, order = {}, {}
  if kind == 'w' then
    local code, dense, buckets = step[3], {}, {}
    for _, bucket in ipairs(step[4]) do buckets[#buckets + 1] = bucket end
    for _, edge in ipairs(step[5]) do
      local others = {}
      for _, hour in ipairs(edge[3]) do
        others[#others + 1] = key_window_bits(tag, acct, code, hour)
        others[#others + 1] = key_window_set(tag, acct, code, hour)
      end
      if #others > 0 and redis.call('EXISTS', unpack(others)) == 0 then
        buckets[#buckets + 1] = edge[1]
      else
        for _, hour in ipairs(edge[2]) do buckets[#buckets + 1] = hour end
      end
    end
    for _, bucket in ipairs(buckets) do
      local bkey = key_window_bits(tag, acct, code, bucket)
      if redis.call('EXISTS', bkey) == 1 then
        dense[#dense + 1] = bkey
      else
        gather(words, order, redis.call('SMEMBERS', key_window_set(tag, acct, code, bucket)))
      end
    end
    write_words(tmp, words, order)  -- before the OR: the words overwrite whole 32-bit ranges
    or_into(tmp, dense)
  elseif kind == 'k' then
    gather(words, order, redis.call('ZRANGEBYSCORE', key_count_rank(tag, acct, step[3]), step[4], step[5]))
    write_words(tmp, words, order)
  else
    gather(words, order, redis.call('ZRANGEBYLEX', key_deposit_sums(tag, acct, step[3]), step[4], step[5]), SUM_DIGITS + 2)
    write_words(tmp, words, order)
  end
end

local function run_steps()
  if program == '[]' then return end
  local tmp = KEYS[2]
  for _, step in ipairs(cjson.decode(program)) do
    redis.call('DEL', tmp)
    step_into(tmp, step)
    if step[2] == 1 then
      -- scratch AND NOT tmp == scratch XOR (scratch AND tmp)
      redis.call('BITOP', 'AND', tmp, scratch, tmp)
      redis.call('BITOP', 'XOR', scratch, scratch, tmp)
    else
      redis.call('BITOP', 'AND', scratch, scratch, tmp)  -- a missing tmp is all zeros
    end
    redis.call('PEXPIRE', scratch, scratch_ttl)
    redis.call('DEL', tmp)
  end
end
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
  run_steps()
end
