-- Applies a batch of postbacks of ONE partition atomically, with the applied-offset watermark.
-- Redis runs a script to completion, so a crash leaves either the whole batch (and its
-- watermark) or none of it: redelivered offsets at or below the watermark change nothing.
--
-- KEYS[1] = applied-offset key of this topic/partition (its hash tag is the partition's tag).
-- Only the watermark is declared in KEYS: the other keys are derived from the records
-- (device, bitmaps, counters, tids, outbox) and all carry the same hash tag ARGV[1], so they live in
-- the same Redis Cluster slot as KEYS[1] (docs/architecture.md, "Exactly once").
-- ARGV[1] = partition hash tag, e.g. "{pbseg:p3}"
-- ARGV[2] = tid retention in ms
-- ARGV[3] = processing time (ms, from the injected clock; unused by the script, kept for the log)
-- ARGV[4] = the batch's last offset: the watermark moves there even when the last records
--           were rejected (they are in ARGV only when they are applicable)
-- ARGV[5] = "1" to append device-event records to the outbox, "0" not to (rebuild)
-- ARGV[6] = the events, a JSON array of arrays (one argument: cheap to send, decoded in C by cjson):
--   [offset, account, install_id, event, occurred_at, received_at, tid ("" = none), bucket]
--   all strings but the offset and bucket (account ids may exceed 2^53); bucket = the install
--   id's forward-map bucket, keys.device_index_bucket (SHA-1 in Python: cheaper than in Lua)
-- ARGV[8] = the batch's first offset (rejected records included). A batch that starts beyond
--   watermark + 1 applies nothing (reply gap = 1): Redis lost writes under a running worker (a
--   rollback, a failover to a lagging replica), and the worker must seek back to watermark + 1.
-- ARGV[9] = the window retention in ms: a windowed bucket expires at its end + this
-- (events also carry, after the bucket: [9] the deposit amount in 10^-10 units and [10] its
-- currency, both "" unless a `dep` with an amount and a currency)
-- ARGV[10] = the maximum lateness of a fire in ms (services/domain/triggers.py `late`)
-- ARGV[11] = "" or the tick that ends this batch, JSON (services/processor/triggers.py
--   TriggerPlan.tick_arg): {o: its offset, at, lat, budget, lists: [[timer hash, action (0 cancel,
--   1 decide), program index, trigger, version, account]], programs: [device programs]}
-- (events also carry [11] the fires their code schedules, [12] those of the derived install of a
-- new device, both ";"-joined "<trigger>:<epoch>:<f|e>:<delay ms>", [13] the event id and [14]
-- the derived install's event id (when [12] is not ""))
-- Timers (docs/decisions/0022-trigger-timers-in-the-log.md): an applied occurrence files each fire
-- it schedules in the timer hash of (trigger, epoch, due minute) (key_timer_list), field = the due
-- second within the minute, value = entries "<device number>|<cause event id>|<ms>" joined by ",";
-- key_timer_due names each hash, scored by its earliest due ms (a lower bound: the ticker lists
-- the hashes with something due);
-- a tick decides the due ones on the state after every record before it (it is the batch's last):
-- cancelled (action 0, or the filter does not hold), skipped (later than `lat`) or fired: a fire
-- line "<account>\t<install id>\t<trigger>\t<version>\t<cause event id>\t<due>\t<at>" in the
-- outbox entry `f` (services/domain/triggers.py `fire_record` renders it), and in key_trigger_recent.
-- ARGV[7] = the events' device-event records as lines "<account>:<install id>\t<head>", one per
--   event of ARGV[6], joined by "\n"; head = the device-event.v1 JSON without `deposit_ordinal`,
--   `first_occurrence` and the closing brace (rendered by planning.py; "" when not emitting).
--   The script never parses it: it stores it as is, next to what only it knows.
-- Keys and layout constants come from the header keys.lua_header() generates from
-- services/common/keys.py (key_device_index(tag, account, bucket), NAMES_BUCKET, ...): this file
-- spells none. Device layout: the forward map (key_device_index) maps install id -> dense device
-- number; the device's whole state is ONE string field of key_device_states(tag, acct,
-- num // NAMES_BUCKET), field num % NAMES_BUCKET, in services/domain/device_state.py's packed form.
-- Outbox: ONE stream entry per batch: `h` = ARGV[7], `t` = one token per event, joined by ","
--   (the format is services/domain/device_event.py's, which turns heads + tokens into records):
--   "-" nothing to publish (offset already applied, or a repeated tid); else "<ordinal>:<first>"
--   (ordinal empty unless dep, first 1/0), prefixed by "+" when the device is new.
-- Three passes (docs/decisions/0007-apply-script-three-passes.md: each cut CPU per event, measured):
--   1. reads: each distinct device's number (HGET of its forward-map bucket), then its packed
--      state, one HMGET per state bucket;
--   2. the records in offset order on the in-memory states (tid checks stay per record: one
--      SET NX GET each, Redis >= 7.0);
--   3. writes, grouped: one HSET per state / reverse-map bucket, one BITFIELD (old bits back) +
--      one HINCRBY + one SADD per touched bitmap, the sequence, the outbox entry, the watermark.
--   A device's state is read and written once per batch, however many of its records it holds.
-- CPU per record (Redis runs Lua 5.1; bench/processor/profile_apply.py measures it): numbers go
-- to redis.call and into keys as strings formatted once ("%d", or the reply they came from), not
-- through Lua's / redis.call's sprintf("%.14g" / "%.17g"); stored values are spliced with as few
-- new strings as possible (Lua interns each one); timestamps compare as canonical decimal strings;
-- a device is an array made with all its slots. (Pausing the garbage collector during the batch
-- saved 4% of the instructions but cost ~20% more Redis CPU: the heap outgrew the caches.)
-- Returns {applied, skipped_offsets, duplicate_tids, outbox_records, gap (1/0), watermark after,
--   fires, fire decisions (fired + cancelled + skipped)}.
local tag = ARGV[1]
local tid_ttl_arg = ARGV[2]
local tid_ttl = tonumber(tid_ttl_arg)
local batch_last = tonumber(ARGV[4])
local emit_records = ARGV[5] == '1'
local call, find, sub, format, floor = redis.call, string.find, string.sub, string.format, math.floor
local watermark = tonumber(call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[8]) > watermark + 1 then return {0, 0, 0, 0, 1, watermark, 0, 0} end
local applied, skipped, dups = 0, 0, 0
local tokens, ntokens = {}, 0
local records = 0
local events = cjson.decode(ARGV[6])
local nevents = #events
-- A device: an array (smaller and quicker to index than named fields), all slots made at once.
local ACCT, INSTALL, IKEY, NUM, NUMSTR, VKEY, FIELD, STATE, DIRTY = 1, 2, 3, 4, 5, 6, 7, 8, 9

local function send(cmd, key, args, nargs, width, out, nout)
  -- `cmd key args[1..nargs]` in calls of at most ~1,000 values (Lua's unpack stops near 8,000),
  -- each a whole number of `width`-value groups; appends the replies to `out` (holding `nout`).
  local step = width * floor(1000 / width)
  for i = 1, nargs, step do
    local r = call(cmd, key, unpack(args, i, math.min(i + step - 1, nargs)))
    if out then
      for k = 1, #r do out[nout + k] = r[k] end
      nout = nout + #r
    end
  end
end

local function group(groups, keys, key)
  -- the list of `key` in `groups` ({n = 0} on first use; `keys` keeps first-use order)
  local list = groups[key]
  if not list then
    list = {n = 0}
    groups[key] = list
    keys[#keys + 1] = key
  end
  return list
end

local bucket_keys = {[key_device_states] = {}, [key_device_names] = {}}  -- key function -> account -> bucket -> key
local function bucket_key(key_of, acct, bucket)
  local of_kind = bucket_keys[key_of]
  local of_acct = of_kind[acct]
  if not of_acct then
    of_acct = {}
    of_kind[acct] = of_acct
  end
  local key = of_acct[bucket]
  if not key then
    key = key_of(tag, acct, bucket)
    of_acct[bucket] = key
  end
  return key
end

local fields = {}  -- num % NAMES_BUCKET -> its string (formatted once per batch)
local function place(dev, num, numstr)
  -- Numbers reach Redis and the keys as strings formatted once: Lua 5.1 and redis.call render
  -- numbers with sprintf("%.14g" / "%.17g"), which cost more than the rest of a record's work.
  dev[NUM] = num
  dev[NUMSTR] = numstr
  dev[VKEY] = bucket_key(key_device_states, dev[ACCT], floor(num / NAMES_BUCKET))
  local f = num % NAMES_BUCKET
  local field = fields[f]
  if not field then
    field = format('%d', f)
    fields[f] = field
  end
  dev[FIELD] = field
end

-- Pass 1, reads only: every distinct device of the records above the watermark - its dense
-- number from the forward map, then the packed states, one HMGET per state bucket.
local devices = {}  -- account -> install id -> {acct, install, ikey, num, numstr, vkey, field, state, dirty}
local event_device = {}  -- i -> the device of events[i] (when above the watermark)
local to_read, read_keys = {}, {}
for i = 1, nevents do
  local e = events[i]
  if e[1] > watermark then
    local acct, install = e[2], e[3]
    local of_acct = devices[acct]
    if not of_acct then
      of_acct = {}
      devices[acct] = of_acct
    end
    local dev = of_acct[install]
    if not dev then
      -- all fields at once (false = not yet): the table is sized once, never rehashed
      dev = {acct, install, key_device_index(tag, acct, e[8]), false, false, false, false, false, false}
      of_acct[install] = dev
      local numstr = call('HGET', dev[IKEY], install)
      if numstr then
        place(dev, tonumber(numstr), numstr)
        local list = group(to_read, read_keys, dev[VKEY])
        list.n = list.n + 1
        list[list.n] = dev
      end
    end
    event_device[i] = dev
  end
end
for r = 1, #read_keys do
  local vkey = read_keys[r]
  local list, names, states = to_read[vkey], {}, {}
  local n = list.n
  for i = 1, n do names[i] = list[i][FIELD] end
  send('HMGET', vkey, names, n, 1, states, 0)
  for i = 1, n do
    local st = states[i]
    list[i][STATE] = st or ''
  end
end

-- Pass 2, in offset order: the semantics, on the in-memory states.
local seqs, seq_accts = {}, {}  -- account -> last dense number handed out (read on first use)
local bits, bit_lists = {}, {}  -- account -> code -> {acct, code, n, numstrs...}: bits to set; all lists
local dirty, ndirty = {}, 0  -- devices whose state changed, in first-change order
local created, ncreated = {}, 0  -- new devices, in numbering order

local function index(dev, code)
  local of_acct = bits[dev[ACCT]]
  if not of_acct then
    of_acct = {}
    bits[dev[ACCT]] = of_acct
  end
  local list = of_acct[code]
  if not list then
    list = {acct = dev[ACCT], code = code, n = 0}
    of_acct[code] = list
    bit_lists[#bit_lists + 1] = list
  end
  local n = list.n + 1
  list.n = n
  list[n] = dev[NUMSTR]
end

-- A device's packed state "code=value;code=value;..." is searched and spliced in place while the
-- batch runs: no per-device tables (parsing into tables cost more than the rest), and as few new
-- strings as possible (Lua interns every string it makes: hashing + allocation, ~0.2 us each).
local needles, heads = {}, {}  -- code -> ";<code>=" / "<code>=" (built once per code and batch)
local function needle_of(code)
  local needle = needles[code]
  if not needle then
    needle = ';' .. code .. '='
    needles[code] = needle
    heads[code] = code .. '='
  end
  return needle
end

local function locate(st, code)
  -- the position of the '=' of `code`'s entry in `st` (nil = never), and the needles
  local needle = needle_of(code)
  local head = heads[code]
  local _, j = find(st, needle, 1, true)
  if not j and find(st, head, 1, true) == 1 then j = #head end
  return j, needle, head
end

local function append(st, needle, head, value)
  if st == '' then return head .. value end
  return st .. needle .. value
end

-- Counts as strings: the stored count string -> the next count (number and string), once per
-- distinct count and batch (no tonumber / number formatting per occurrence).
local next_num, next_str = {}, {}
local function next_count(s)
  local n = next_num[s]
  if not n then
    n = tonumber(s) + 1
    next_num[s] = n
    next_str[s] = format('%d', n)
  end
  return n, next_str[s]
end
local dep_codes = {}  -- count -> "dep_<count>"

-- Windowed index: occurrences grouped per (account, code, bucket), each bucket a device set.
-- Per event only table lookups keyed by numbers and interned strings (no string building): the
-- buckets of an hour are made once per batch.
local window_retention_s = floor(tonumber(ARGV[9]) / 1000)
local HOUR_MS = 3600000
local hour_buckets = {}  -- hour number -> {hour bucket, its expiry, day bucket, its expiry}
local windows, window_lists = {}, {}  -- acct -> code -> bucket -> {acct, code, bucket, expiry, n, nums...}
local function window_group(acct, code, bucket, expiry, numstr)
  local of_acct = windows[acct]
  if not of_acct then
    of_acct = {}
    windows[acct] = of_acct
  end
  local of_code = of_acct[code]
  if not of_code then
    of_code = {}
    of_acct[code] = of_code
  end
  local list = of_code[bucket]
  if not list then
    list = {acct = acct, code = code, bucket = bucket, expiry = expiry, n = 0}
    of_code[bucket] = list
    window_lists[#window_lists + 1] = list
  end
  local n = list.n + 1
  list.n = n
  list[n] = numstr
end
local function window_add(dev, code, ts)
  local hour = floor(tonumber(ts) / HOUR_MS)
  local b = hour_buckets[hour]
  if not b then
    local day = floor(hour / 24)
    b = {'h' .. format('%d', hour), format('%d', (hour + 1) * 3600 + window_retention_s),
         'd' .. format('%d', day), format('%d', (day + 1) * 86400 + window_retention_s)}
    hour_buckets[hour] = b
  end
  window_group(dev[ACCT], code, b[1], b[2], dev[NUMSTR])
  window_group(dev[ACCT], code, b[3], b[4], dev[NUMSTR])
end
-- Count ranks: (account, code) -> device number -> the count after the batch (counts >= 2).
local ranks, rank_lists = {}, {}  -- acct -> code -> {acct, code, of = {numstr -> count}, order}
local function rank(dev, code, count_str)
  local of_acct = ranks[dev[ACCT]]
  if not of_acct then
    of_acct = {}
    ranks[dev[ACCT]] = of_acct
  end
  local list = of_acct[code]
  if not list then
    list = {acct = dev[ACCT], code = code, of = {}, order = {}}
    of_acct[code] = list
    rank_lists[#rank_lists + 1] = list
  end
  local numstr = dev[NUMSTR]
  if not list.of[numstr] then list.order[#list.order + 1] = numstr end
  list.of[numstr] = count_str
end
-- Deposit sums: decimal strings (units of 10^-10 can exceed 2^53): added as Lua numbers while
-- both have at most 15 digits (the sum stays below 2^53, exact), else digit by digit.
local byte, rep = string.byte, string.rep
local function add_decimal(a, b)
  if #a <= 15 and #b <= 15 then return format('%d', tonumber(a) + tonumber(b)) end
  local out, carry, i, j, k = {}, 0, #a, #b, 0
  while i > 0 or j > 0 or carry > 0 do
    local d = carry + (i > 0 and byte(a, i) - 48 or 0) + (j > 0 and byte(b, j) - 48 or 0)
    carry = d >= 10 and 1 or 0
    k = k + 1
    out[k] = d - 10 * carry
    i, j = i - 1, j - 1
  end
  local digits = {}
  for m = k, 1, -1 do digits[k - m + 1] = out[m] end
  local s = table.concat(digits):gsub('^0+', '')
  return s == '' and '0' or s
end
-- Pass 2 only adds up each device's deposits of the batch per currency; pass 3 reads the stored
-- sums (one HMGET per sum bucket), writes them back (one HSET per bucket) and moves the devices'
-- members in the currency's sorted set (one ZREM + one ZADD per currency).
local deltas, delta_lists = {}, {}  -- dev -> currency -> {dev, currency, units}
local function deposit(dev, currency, units)
  local of_dev = deltas[dev]
  if not of_dev then
    of_dev = {}
    deltas[dev] = of_dev
  end
  local d = of_dev[currency]
  if not d then
    of_dev[currency] = {dev, currency, units}
    delta_lists[#delta_lists + 1] = of_dev[currency]
  else
    d[3] = add_decimal(d[3], units)
  end
end
local function sum_member(units, numstr)
  if #units > SUM_DIGITS then error('a deposit sum exceeds SUM_DIGITS digits of 10^-10 units') end
  return rep('0', SUM_DIGITS - #units) .. units .. ':' .. numstr
end

-- Timers: the fires each applied occurrence schedules, grouped per timer list (written in pass 3);
-- the trigger counters' deltas (written at the end).
local max_lateness = tonumber(ARGV[10] or '0') or 0
local spec_cache = {}  -- an event's schedule field -> {{trigger, epoch, first only, delay ms}...}
local function parse_specs(text)
  local list = spec_cache[text]
  if not list then
    list = {}
    for trg, ep, occ, delay in string.gmatch(text, '(%d+):(%d+):(%a):(%d+)') do
      list[#list + 1] = {trg, ep, occ == 'f', tonumber(delay)}
    end
    spec_cache[text] = list
  end
  return list
end
local timers, timer_order = {}, {}  -- timer hash name -> {trg, ep, minute, due (earliest), secs = {sec -> entries}, order}
local stats, stat_order = {}, {}  -- trigger -> counter -> delta
local function stat(trg, counter, n)
  local of = stats[trg]
  if not of then
    of = {}
    stats[trg] = of
    stat_order[#stat_order + 1] = trg
  end
  of[counter] = (of[counter] or 0) + n
end
local function schedule(dev, specs, count, ts, received, event_id)
  for _, sp in ipairs(parse_specs(specs)) do
    if count == 1 or not sp[3] then
      local due = tonumber(ts) + sp[4]
      if tonumber(received) - due > max_lateness then
        stat(sp[1], 'l', 1)  -- backdated beyond the maximum lateness: skipped, counted
      else
        local sec = floor(due / 1000)
        local minute = floor(sec / 60)
        local member = sp[1] .. ':' .. sp[2] .. ':' .. format('%d', minute)
        local h = timers[member]
        if not h then
          h = {trg = sp[1], ep = sp[2], minute = format('%d', minute), due = due, secs = {}, order = {}}
          timers[member] = h
          timer_order[#timer_order + 1] = member
        end
        if due < h.due then h.due = due end
        local field = format('%d', sec - minute * 60)
        local entries = h.secs[field]
        if not entries then
          entries = {}
          h.secs[field] = entries
          h.order[#h.order + 1] = field
        end
        entries[#entries + 1] = dev[NUMSTR] .. '|' .. event_id .. '|' .. format('%d', due - sec * 1000)
        stat(sp[1], 'p' .. sp[2], 1)
      end
    end
  end
end

local function before(a, b)
  -- a < b for timestamps as stored (canonical decimal integers >= 0): by length, then by digits
  local la, lb = #a, #b
  if la ~= lb then return la < lb end
  return a < b
end

for i = 1, nevents do
  local e = events[i]
  if e[1] <= watermark then
    skipped = skipped + 1
    ntokens = ntokens + 1
    tokens[ntokens] = '-'
  else
    local acct, code, ts, tid = e[2], e[4], e[5], e[7]
    local duplicate = false
    if tid ~= '' then
      -- The value is the ingress receive time of the first occurrence, so a replay of the
      -- log (pbseg rebuild) reaches the same dedupe decisions as live processing did.
      -- SET NX GET (Redis >= 7.0): sets when new (reply nil), else returns the first sighting.
      local received = e[6]
      local tkey = key_tid(tag, acct, #e[3], e[3], code, tid)
      local prev = call('SET', tkey, received, 'NX', 'PX', tid_ttl_arg, 'GET')
      if prev then
        -- seen before: a duplicate unless the first sighting is older than the retention
        if tonumber(received) - tonumber(prev) < tid_ttl then
          duplicate = true
        else
          call('SET', tkey, received, 'PX', tid_ttl_arg)
        end
      end
    end
    if duplicate then
      dups = dups + 1
      ntokens = ntokens + 1
      tokens[ntokens] = '-'
    else
      local dev = event_device[i]
      local install_postback, fresh = false, false
      local prefix = ''
      if not dev[NUM] then
        local seq = seqs[acct]
        if not seq then
          seq = tonumber(call('GET', key_device_seq(tag, acct)) or '0')
          seq_accts[#seq_accts + 1] = acct
        end
        seq = seq + 1
        seqs[acct] = seq
        place(dev, seq, format('%d', seq))
        ncreated = ncreated + 1
        created[ncreated] = dev
        index(dev, 'install')
        -- an install postback on a new device IS the device's install occurrence; any other
        -- code is the new device's first occurrence of it: the state is made in one piece
        install_postback = code == 'install'
        if install_postback then
          dev[STATE] = 'install=' .. ts
        else
          fresh = true
          dev[STATE] = 'install=' .. ts .. needle_of(code) .. ts
          prefix = '+'
          records = records + 1
        end
      end
      local count, count_str = 1, '1'
      if fresh then
        index(dev, code)
      elseif not install_postback then
        -- one more occurrence at ts: the value "<first>" (count 1) or "<first>:<last>:<count>"
        local st = dev[STATE]
        local j, needle, head = locate(st, code)
        if not j then
          st = append(st, needle, head, ts)
        else
          local k = find(st, ';', j + 1, true)  -- the entry is st[j + 1 .. k - 1]
          local p = find(st, ':', j + 1, true)
          local tail = k and sub(st, k) or ''
          if p and (not k or p < k) then
            -- "<first>:<last>:<count>"; first <= last, so ts >= last needs no look at first
            local q = find(st, ':', p + 1, true)
            local last = sub(st, p + 1, q - 1)
            count, count_str = next_count(sub(st, q + 1, (k or 0) - 1))
            if not before(ts, last) then
              st = sub(st, 1, p) .. ts .. ':' .. count_str .. tail
            else
              local first = sub(st, j + 1, p - 1)
              if before(ts, first) then first = ts end
              st = sub(st, 1, j) .. first .. ':' .. last .. ':' .. count_str .. tail
            end
          else
            local first = sub(st, j + 1, (k or 0) - 1)
            count, count_str = 2, '2'
            if before(ts, first) then
              st = sub(st, 1, j) .. ts .. ':' .. first .. ':2' .. tail
            else
              st = sub(st, 1, j) .. first .. ':' .. ts .. ':2' .. tail
            end
          end
        end
        if count == 1 then index(dev, code) end
        if code == 'dep' then
          if count >= 2 then
            -- dep_<n> is reached once per device: always a first occurrence
            local dn = dep_codes[count]
            if not dn then
              dn = 'dep_' .. count_str
              dep_codes[count] = dn
            end
            local dj, dneedle, dhead = locate(st, dn)
            if not dj then
              st = append(st, dneedle, dhead, ts)
            else
              local dk = find(st, ';', dj + 1, true)
              st = sub(st, 1, dj) .. ts .. (dk and sub(st, dk) or '')
            end
            index(dev, dn)
          end
        end
        dev[STATE] = st
      end
      if not dev[DIRTY] then
        dev[DIRTY] = true
        ndirty = ndirty + 1
        dirty[ndirty] = dev
      end
      -- the windowed index, the count rank and the deposit sum (pass 3 writes them grouped)
      window_add(dev, code, ts)
      if fresh then window_add(dev, 'install', ts) end  -- a new device's install is an occurrence too
      if count >= 2 and code ~= 'dep' then rank(dev, code, count_str) end
      if code == 'dep' and e[9] ~= '' and e[10] ~= '' then deposit(dev, e[10], e[9]) end
      if e[11] ~= '' then schedule(dev, e[11], count, ts, e[6], e[13]) end
      if fresh and e[12] ~= '' then schedule(dev, e[12], 1, ts, e[6], e[14]) end
      -- "<prefix><ordinal>:<first 1/0>"; the ordinal only for deposits
      local token = count == 1 and ':1' or ':0'
      if code == 'dep' then token = count_str .. token end
      if prefix ~= '' then token = prefix .. token end
      ntokens = ntokens + 1
      tokens[ntokens] = token
      records = records + 1
      applied = applied + 1
    end
  end
end

-- Pass 3, writes: grouped per key (one multi-field command per bucket, bitmap and counter).
local writes, write_keys = {}, {}
for i = 1, ncreated do
  local dev = created[i]
  call('HSET', dev[IKEY], dev[INSTALL], dev[NUMSTR])
  local list = group(writes, write_keys, bucket_key(key_device_names, dev[ACCT], floor(dev[NUM] / NAMES_BUCKET)))
  local n = list.n
  list[n + 1], list[n + 2] = dev[FIELD], dev[INSTALL]
  list.n = n + 2
end
for _, acct in ipairs(seq_accts) do call('SET', key_device_seq(tag, acct), format('%d', seqs[acct])) end
for i = 1, ndirty do
  local dev = dirty[i]
  local list = group(writes, write_keys, dev[VKEY])
  local n = list.n
  list[n + 1], list[n + 2] = dev[FIELD], dev[STATE]
  list.n = n + 2
end
for _, key in ipairs(write_keys) do
  local list = writes[key]
  send('HSET', key, list, list.n, 2)
end
for _, list in ipairs(bit_lists) do
  -- The per-code device counter moves by the bits that turned 0 -> 1, so it equals the
  -- bitmap's BITCOUNT, committed in the same script (the overview reads it instead of BITCOUNT).
  local args, old, n = {}, {}, list.n
  for i = 1, n do
    args[4 * i - 3], args[4 * i - 2], args[4 * i - 1], args[4 * i] = 'SET', 'u1', list[i], '1'
  end
  send('BITFIELD', key_segment(tag, list.acct, list.code), args, 4 * n, 4, old, 0)
  local turned = 0
  for k = 1, #old do if old[k] == 0 then turned = turned + 1 end end
  if turned > 0 then call('HINCRBY', key_device_counts(tag, list.acct), list.code, turned) end
  call('SADD', key_segment_codes(tag, list.acct), list.code)
end
-- Device sets (windowed buckets): a set until it holds more than max(DEVSET_SET_MIN, min(the
-- account's devices in the partition // density, DEVSET_SET_MAX)), density DEVSET_HOUR_DENSITY for
-- hour buckets and DEVSET_DAY_DENSITY for days (keys.devset_limit), then a bitmap (the set deleted).
local function set_bits(key, nums, n)
  local args = {}
  for i = 1, n do args[4 * i - 3], args[4 * i - 2], args[4 * i - 1], args[4 * i] = 'SET', 'u1', nums[i], '1' end
  send('BITFIELD', key, args, 4 * n, 4)
end
for _, w in ipairs(window_lists) do
  local bkey = key_window_bits(tag, w.acct, w.code, w.bucket)
  local key = bkey
  if call('EXISTS', bkey) == 1 then
    set_bits(bkey, w, w.n)
  else
    key = key_window_set(tag, w.acct, w.code, w.bucket)
    send('SADD', key, w, w.n, 1)
    local devices = seqs[w.acct]
    if not devices then
      devices = tonumber(call('GET', key_device_seq(tag, w.acct)) or '0')
      seqs[w.acct] = devices
    end
    local density = byte(w.bucket, 1) == 104 and DEVSET_HOUR_DENSITY or DEVSET_DAY_DENSITY  -- 'h'
    if call('SCARD', key) > math.max(DEVSET_SET_MIN, math.min(floor(devices / density), DEVSET_SET_MAX)) then
      local members = call('SMEMBERS', key)
      set_bits(bkey, members, #members)
      call('DEL', key)
      key = bkey
    end
  end
  call('EXPIREAT', key, w.expiry)
end
for _, r in ipairs(rank_lists) do
  local args, n = {}, 0
  for _, numstr in ipairs(r.order) do
    args[n + 1], args[n + 2] = r.of[numstr], numstr
    n = n + 2
  end
  send('ZADD', key_count_rank(tag, r.acct, r.code), args, n, 2)
end
if #delta_lists > 0 then
  local by_bucket, bucket_order = {}, {}  -- sum bucket key -> {n, deltas...}
  for _, d in ipairs(delta_lists) do
    local dev = d[1]
    local list = group(by_bucket, bucket_order,
                       key_deposit_sum_of(tag, dev[ACCT], format('%d', floor(dev[NUM] / NAMES_BUCKET))))
    list.n = list.n + 1
    list[list.n] = d
  end
  local removed, added, zorder = {}, {}, {}  -- currency key -> members
  for _, hkey in ipairs(bucket_order) do
    local list, fields, values = by_bucket[hkey], {}, {}
    for i = 1, list.n do fields[i] = list[i][1][FIELD] .. ':' .. list[i][2] end
    send('HMGET', hkey, fields, list.n, 1, values, 0)
    local writes = {}
    for i = 1, list.n do
      local d = list[i]
      local dev, old = d[1], values[i]
      local new = old and add_decimal(old, d[3]) or d[3]
      local zkey = key_deposit_sums(tag, dev[ACCT], d[2])
      if not added[zkey] then
        added[zkey], removed[zkey] = {n = 0}, {n = 0}
        zorder[#zorder + 1] = zkey
      end
      if old then
        local r = removed[zkey]
        r.n = r.n + 1
        r[r.n] = sum_member(old, dev[NUMSTR])
      end
      local a = added[zkey]
      a[a.n + 1], a[a.n + 2] = '0', sum_member(new, dev[NUMSTR])
      a.n = a.n + 2
      writes[2 * i - 1], writes[2 * i] = fields[i], new
    end
    send('HSET', hkey, writes, 2 * list.n, 2)
  end
  for _, zkey in ipairs(zorder) do
    if removed[zkey].n > 0 then send('ZREM', zkey, removed[zkey], removed[zkey].n, 1) end
    send('ZADD', zkey, added[zkey], added[zkey].n, 2)
  end
end
for _, member in ipairs(timer_order) do
  local h = timers[member]
  local hkey = key_timer_list(tag, h.trg, h.ep, h.minute)
  local fields = {}
  for i, field in ipairs(h.order) do fields[i] = field end
  local old = {}
  send('HMGET', hkey, fields, #fields, 1, old, 0)
  local writes = {}
  for i, field in ipairs(fields) do
    local new = table.concat(h.secs[field], ',')
    writes[2 * i - 1], writes[2 * i] = field, old[i] and (old[i] .. ',' .. new) or new
  end
  send('HSET', hkey, writes, 2 * #fields, 2)
  call('ZADD', key_timer_due(tag), 'LT', format('%d', h.due), member)  -- LT: only ever earlier; NX-free (new members too)
end
if emit_records and records > 0 then
  call('XADD', key_outbox(tag), '*', 'h', ARGV[7], 't', table.concat(tokens, ','))
else
  records = 0
end

-- The tick: decide the fires due at `at` in the listed timer hashes, at most `budget` of them.
local function has(st, code) return locate(st, code) ~= nil end
local function device_holds(prog, acct, num, numstr)
  -- whether the trigger's filter holds for the device now, and its install id
  local bucket = floor(num / NAMES_BUCKET)
  local fieldstr = format('%d', num % NAMES_BUCKET)
  local st = call('HGET', key_device_states(tag, acct, bucket), fieldstr) or ''
  local install = call('HGET', key_device_names(tag, acct, bucket), fieldstr) or ''
  local inc, hits = prog.inc, 0
  for i = 1, #inc do if has(st, inc[i]) then hits = hits + 1 end end
  if (prog.any == 1 and hits == 0) or (prog.any ~= 1 and hits < #inc) then return false, install end
  for _, c in ipairs(prog.exc) do if has(st, c) then return false, install end end
  for _, c in ipairs(prog.req) do if not has(st, c) then return false, install end end
  for _, s in ipairs(prog.steps) do
    local hit, kind = false, s[1]
    if kind == 'w' then
      for _, b in ipairs(s[4]) do
        if call('SISMEMBER', key_window_set(tag, acct, s[3], b), numstr) == 1
           or call('GETBIT', key_window_bits(tag, acct, s[3], b), numstr) == 1 then
          hit = true
          break
        end
      end
    elseif kind == 'k' then
      local score = call('ZSCORE', key_count_rank(tag, acct, s[3]), numstr)
      if score then
        local n = tonumber(score)
        hit = n >= s[4] and (s[5] < 0 or n <= s[5])
      end
    else
      local units = call('HGET', key_deposit_sum_of(tag, acct, format('%d', bucket)), fieldstr .. ':' .. s[3]) or '0'
      local padded = rep('0', SUM_DIGITS - #units) .. units
      hit = padded >= s[4] and (s[5] == '' or padded <= s[5])
    end
    if hit == (s[2] == 1) then return false, install end
  end
  return true, install
end

local fired, decided = 0, 0
if ARGV[11] ~= '' then
  local tick = cjson.decode(ARGV[11])
  if tick.o > watermark then
    local at, lat, budget, programs = tick.at, tick.lat, tick.budget, tick.programs
    local at_sec = floor(at / 1000)
    local atstr = format('%d', at)
    local lines, recent, recent_order = {}, {}, {}
    for _, L in ipairs(tick.lists) do
      if decided >= budget then break end
      local member, action, prog, version, acct = L[1], L[2], programs[L[3]], L[5], L[6]
      local t_s, e_s, m_s = string.match(member, '^(%d+):(%d+):(%d+)$')
      local minute = tonumber(m_s)
      if minute and minute * 60 <= at_sec then
        local hkey = key_timer_list(tag, t_s, e_s, m_s)
        local flat = call('HGETALL', hkey)
        local secs = {}
        for i = 1, #flat, 2 do secs[#secs + 1] = {tonumber(flat[i]), flat[i], flat[i + 1]} end
        table.sort(secs, function(a, b) return a[1] < b[1] end)
        local done, nf, nc, nl = 0, 0, 0, 0
        local earliest = nil  -- the earliest due ms left in the hash
        for _, f in ipairs(secs) do
          local sec = minute * 60 + f[1]
          if sec > at_sec or decided >= budget then
            if not earliest then earliest = sec * 1000 end
          else
            local keep, changed = {}, false
            for entry in string.gmatch(f[3], '[^,]+') do
              local ns, eid, ms = string.match(entry, '^(%d+)|(.+)|(%d+)$')
              local due = sec * 1000 + tonumber(ms)
              if due > at or decided >= budget then
                keep[#keep + 1] = entry
                if not earliest or due < earliest then earliest = due end
              else
                changed = true
                decided, done = decided + 1, done + 1
                if action == 0 then
                  nc = nc + 1
                elseif at - due > lat then
                  nl = nl + 1
                else
                  local holds, install = device_holds(prog, acct, tonumber(ns), ns)
                  if holds then
                    nf = nf + 1
                    local line = acct .. '\t' .. install .. '\t' .. t_s .. '\t' .. format('%d', version) .. '\t' .. eid
                                 .. '\t' .. format('%d', due) .. '\t' .. atstr
                    lines[#lines + 1] = line
                    local r = group(recent, recent_order, t_s)
                    r.n = r.n + 1
                    r[r.n] = line
                  else
                    nc = nc + 1
                  end
                end
              end
            end
            if changed then
              if #keep > 0 then call('HSET', hkey, f[2], table.concat(keep, ',')) else call('HDEL', hkey, f[2]) end
            end
          end
        end
        if earliest then
          call('ZADD', key_timer_due(tag), format('%d', earliest), member)
        else
          call('ZREM', key_timer_due(tag), member)
        end
        if done > 0 then stat(t_s, 'p' .. e_s, -done) end
        if nf > 0 then stat(t_s, 'f', nf) end
        if nc > 0 then stat(t_s, 'c', nc) end
        if nl > 0 then stat(t_s, 'l', nl) end
        fired = fired + nf
      end
    end
    if #lines > 0 then
      if emit_records then call('XADD', key_outbox(tag), '*', 'f', table.concat(lines, '\n')) end
      for _, t_s in ipairs(recent_order) do
        local r, newest = recent[t_s], {}
        for i = r.n, math.max(1, r.n - RECENT_FIRES + 1), -1 do newest[#newest + 1] = r[i] end
        local rkey = key_trigger_recent(tag, t_s)
        for i = #newest, 1, -1 do call('LPUSH', rkey, newest[i]) end
        call('LTRIM', rkey, 0, RECENT_FIRES - 1)
      end
    end
  end
end
for _, trg in ipairs(stat_order) do
  local key = key_trigger_stats(tag, trg)
  for counter, n in pairs(stats[trg]) do
    if n ~= 0 then call('HINCRBY', key, counter, n) end
  end
end
if batch_last > watermark then
  call('SET', KEYS[1], ARGV[4])
  watermark = batch_last
end
return {applied, skipped, dups, records, 0, watermark, fired, decided}
