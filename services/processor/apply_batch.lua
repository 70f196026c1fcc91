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
-- ARGV[7] = the events' device-event records as lines "<account>:<install id>\t<head>", one per
--   event of ARGV[6], joined by "\n"; head = the device-event.v1 JSON without `deposit_ordinal`,
--   `first_occurrence` and the closing brace (rendered by planning.py; "" when not emitting).
--   The script never parses it: it stores it as is, next to what only it knows.
-- Device layout (services/common/keys.py): forward map `<tag>:i:<acct>:<bucket>`
--   field install id -> dense device number; the device's whole state is ONE string field
--   `<tag>:v:<acct>:<num // 512>` field `num % 512` = "code=value;code=value;..." in first-seen
--   order, value "<first_ms>" while count is 1, else "<first_ms>:<last_ms>:<count>".
-- Outbox: ONE stream entry per batch: `h` = ARGV[7], `t` = one token per event, joined by ",":
--   "-" nothing to publish (offset already applied, or a repeated tid); else "<ordinal>:<first>"
--   (ordinal empty unless dep, first 1/0), prefixed by "+" when the device is new and its
--   `install` record (event id "<event_id>:install") comes first. store.OutboxEntry.records()
--   turns heads + tokens into the records.
-- Three passes (docs/architecture.md, "Processor": each cut CPU per event, measured):
--   1. reads: each distinct device's number (HGET of its forward-map bucket), then its packed
--      state, one HMGET per state bucket;
--   2. the records in offset order on the in-memory states (tid checks stay per record: SET NX);
--   3. writes, grouped: one HSET per state / reverse-map bucket, one BITFIELD (old bits back) +
--      one HINCRBY + one SADD per touched bitmap, the sequence, the outbox entry, the watermark.
--   A device's state is parsed and rendered once per batch, however many of its records it holds.
-- Returns {applied, skipped_offsets, duplicate_tids, outbox_records}.
local tag = ARGV[1]
local tid_ttl = tonumber(ARGV[2])
local batch_last = tonumber(ARGV[4])
local emit_records = ARGV[5] == '1'
local watermark = tonumber(redis.call('GET', KEYS[1]) or '-1')
local applied, skipped, dups = 0, 0, 0
local tokens = {}
local records = 0
local events = cjson.decode(ARGV[6])

local function send(cmd, key, args, width, out)
  -- `cmd key args...` in calls of at most ~1,000 values (Lua's unpack stops near 8,000), each a
  -- whole number of `width`-value groups; appends the replies to `out` when given.
  local step = width * math.floor(1000 / width)
  for i = 1, #args, step do
    local r = redis.call(cmd, key, unpack(args, i, math.min(i + step - 1, #args)))
    if out then for k = 1, #r do out[#out + 1] = r[k] end end
  end
end

local function group(groups, keys, key)
  -- the list of `key` in `groups` (created on first use; `keys` keeps first-use order)
  local list = groups[key]
  if not list then
    list = {}
    groups[key] = list
    keys[#keys + 1] = key
  end
  return list
end

-- A device's packed state is kept as ";code=value;code=value..." while the batch runs (a
-- separator before every entry, so ";<code>=" finds exactly one code) and is searched and
-- spliced in place: no per-device tables (parsing into tables cost more than the rest).
local needles = {}  -- code -> ";<code>=" (built once per code and batch)
local function get(st, code)
  -- the stored value of `code` (nil = never) and its bounds for `put`
  local needle = needles[code]
  if not needle then
    needle = ';' .. code .. '='
    needles[code] = needle
  end
  local _, j = string.find(st, needle, 1, true)
  if not j then return nil end
  local k = string.find(st, ';', j + 1, true)
  return string.sub(st, j + 1, (k or 0) - 1), j, k
end

local function put(st, code, value, j, k)
  -- `st` with `code` set to `value` (j, k from `get`; j nil appends the code)
  if not j then return st .. ';' .. code .. '=' .. value end
  if k then return string.sub(st, 1, j) .. value .. string.sub(st, k) end
  return string.sub(st, 1, j) .. value
end

local function bump(cur, ts)
  -- One more occurrence at ts of an event whose stored value is `cur` (nil = never).
  if not cur then return ts, 1 end
  local first, last, count = string.match(cur, '^(%d+):(%d+):(%d+)$')
  if not first then first, last, count = cur, cur, '1' end
  count = tonumber(count) + 1
  local t = tonumber(ts)
  if t > tonumber(last) then last = ts end
  if t < tonumber(first) then first = ts end
  return first .. ':' .. last .. ':' .. count, count
end

local function place(dev, num)
  dev.num = num
  dev.vkey = tag .. ':v:' .. dev.acct .. ':' .. math.floor(num / 512)
  dev.field = num % 512
end

-- Pass 1, reads only: every distinct device of the records above the watermark - its dense
-- number from the forward map, then the packed states, one HMGET per state bucket.
local devices = {}  -- account -> install id -> {acct, install, ikey, num, vkey, field, state}
local event_device = {}  -- i -> the device of events[i] (when above the watermark)
local to_read, read_keys = {}, {}
for i, e in ipairs(events) do
  if e[1] > watermark then
    local acct, install = e[2], e[3]
    local of_acct = devices[acct]
    if not of_acct then
      of_acct = {}
      devices[acct] = of_acct
    end
    local dev = of_acct[install]
    if not dev then
      dev = {acct = acct, install = install, ikey = tag .. ':i:' .. acct .. ':' .. e[8]}
      of_acct[install] = dev
      local num = redis.call('HGET', dev.ikey, install)
      if num then
        place(dev, tonumber(num))
        table.insert(group(to_read, read_keys, dev.vkey), dev)
      end
    end
    event_device[i] = dev
  end
end
for _, vkey in ipairs(read_keys) do
  local list, fields, states = to_read[vkey], {}, {}
  for i, dev in ipairs(list) do fields[i] = dev.field end
  send('HMGET', vkey, fields, 1, states)
  for i, dev in ipairs(list) do dev.state = states[i] and (';' .. states[i]) or '' end
end

-- Pass 2, in offset order: the semantics, on the in-memory states.
local seqs, seq_accts = {}, {}  -- account -> last dense number handed out (read on first use)
local bits, bit_lists = {}, {}  -- account -> code -> {acct, code, nums...}: bits to set; all lists
local dirty = {}  -- devices whose state changed, in first-change order
local created = {}  -- new devices, in numbering order

local function index(dev, code)
  local of_acct = bits[dev.acct]
  if not of_acct then
    of_acct = {}
    bits[dev.acct] = of_acct
  end
  local list = of_acct[code]
  if not list then
    list = {acct = dev.acct, code = code}
    of_acct[code] = list
    bit_lists[#bit_lists + 1] = list
  end
  list[#list + 1] = dev.num
end

for i, e in ipairs(events) do
  local offset = e[1]
  if offset <= watermark then
    skipped = skipped + 1
    tokens[#tokens + 1] = '-'
  else
    local acct, install, code = e[2], e[3], e[4]
    local ts, received, tid = e[5], e[6], e[7]
    local duplicate = false
    if tid ~= '' then
      -- The value is the ingress receive time of the first occurrence, so a replay of the
      -- log (pbseg rebuild) reaches the same dedupe decisions as live processing did.
      local tkey = tag .. ':t:' .. acct .. ':' .. install .. ':' .. code .. ':' .. tid
      if not redis.call('SET', tkey, received, 'NX', 'PX', tid_ttl) then
        -- seen before: a duplicate unless the first sighting is older than the retention
        local prev = redis.call('GET', tkey)
        if tonumber(received) - tonumber(prev) < tid_ttl then
          duplicate = true
        else
          redis.call('SET', tkey, received, 'PX', tid_ttl)
        end
      end
    end
    if duplicate then
      dups = dups + 1
      tokens[#tokens + 1] = '-'
    else
      local dev = event_device[i]
      local install_postback = false
      local prefix = ''
      if not dev.num then
        local seq = seqs[acct]
        if not seq then
          seq = tonumber(redis.call('GET', tag .. ':seq:' .. acct) or '0')
          seq_accts[#seq_accts + 1] = acct
        end
        seq = seq + 1
        seqs[acct] = seq
        place(dev, seq)
        created[#created + 1] = dev
        dev.state = ';install=' .. ts
        index(dev, 'install')
        -- an install postback on a new device IS the device's install occurrence
        install_postback = code == 'install'
        if not install_postback then
          prefix = '+'
          records = records + 1
        end
      end
      local count, ordinal = 1, ''
      if not install_postback then
        local cur, j, k = get(dev.state, code)
        local new_value
        new_value, count = bump(cur, ts)
        dev.state = put(dev.state, code, new_value, j, k)
        if count == 1 then index(dev, code) end
        if code == 'dep' then
          ordinal = tostring(count)
          if count >= 2 then
            -- dep_<n> is reached once per device: always a first occurrence
            local dn = 'dep_' .. count
            local _, dj, dk = get(dev.state, dn)
            dev.state = put(dev.state, dn, ts, dj, dk)
            index(dev, dn)
          end
        end
      end
      if not dev.dirty then
        dev.dirty = true
        dirty[#dirty + 1] = dev
      end
      tokens[#tokens + 1] = prefix .. ordinal .. (count == 1 and ':1' or ':0')
      records = records + 1
      applied = applied + 1
    end
  end
end

-- Pass 3, writes: grouped per key (one multi-field command per bucket, bitmap and counter).
local writes, write_keys = {}, {}
for _, dev in ipairs(created) do
  redis.call('HSET', dev.ikey, dev.install, dev.num)
  local list = group(writes, write_keys, tag .. ':n:' .. dev.acct .. ':' .. math.floor(dev.num / 512))
  list[#list + 1] = dev.field
  list[#list + 1] = dev.install
end
for _, acct in ipairs(seq_accts) do redis.call('SET', tag .. ':seq:' .. acct, seqs[acct]) end
for _, dev in ipairs(dirty) do
  local list = group(writes, write_keys, dev.vkey)
  list[#list + 1] = dev.field
  list[#list + 1] = string.sub(dev.state, 2)
end
for _, key in ipairs(write_keys) do send('HSET', key, writes[key], 2) end
for _, list in ipairs(bit_lists) do
  -- The per-code device counter moves by the bits that turned 0 -> 1, so it equals the
  -- bitmap's BITCOUNT, committed in the same script (the overview reads it instead of BITCOUNT).
  local args, old = {}, {}
  for i, num in ipairs(list) do
    args[4 * i - 3], args[4 * i - 2], args[4 * i - 1], args[4 * i] = 'SET', 'u1', num, 1
  end
  send('BITFIELD', tag .. ':s:' .. list.acct .. ':' .. list.code, args, 4, old)
  local turned = 0
  for _, v in ipairs(old) do if v == 0 then turned = turned + 1 end end
  if turned > 0 then redis.call('HINCRBY', tag .. ':cnt:' .. list.acct, list.code, turned) end
  redis.call('SADD', tag .. ':codes:' .. list.acct, list.code)
end
if emit_records and records > 0 then
  redis.call('XADD', tag .. ':outbox', '*', 'h', ARGV[7], 't', table.concat(tokens, ','))
else
  records = 0
end
if batch_last > watermark then redis.call('SET', KEYS[1], batch_last) end
return {applied, skipped, dups, records}
