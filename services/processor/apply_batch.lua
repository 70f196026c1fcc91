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
--   [offset, account, install_id, event, occurred_at, received_at, tid ("" = none)]
--   all strings but the offset (account ids may exceed 2^53)
-- ARGV[7] = the events' device-event records as lines "<account>:<install id>\t<head>", one per
--   event of ARGV[6], joined by "\n"; head = the device-event.v1 JSON without `deposit_ordinal`,
--   `first_occurrence` and the closing brace (rendered by planning.py; "" when not emitting).
--   The script never parses it: it stores it as is, next to what only it knows.
-- Device layout (services/common/keys.py): forward map `<tag>:i:<acct>:<device_bucket(install)>`
--   field install id -> dense device number; the device's whole state is ONE string field
--   `<tag>:v:<acct>:<num // 512>` field `num % 512` = "code=value;code=value;..." in first-seen
--   order, value "<first_ms>" while count is 1, else "<first_ms>:<last_ms>:<count>".
-- Outbox: ONE stream entry per batch: `h` = ARGV[7], `t` = one token per event, joined by ",":
--   "-" nothing to publish (offset already applied, or a repeated tid); else "<ordinal>:<first>"
--   (ordinal empty unless dep, first 1/0), prefixed by "+" when the device is new and its
--   `install` record (event id "<event_id>:install") comes first. store.OutboxEntry.records()
--   turns heads + tokens into the records.
-- Returns {applied, skipped_offsets, duplicate_tids, outbox_records}.
local tag = ARGV[1]
local tid_ttl = tonumber(ARGV[2])
local batch_last = tonumber(ARGV[4])
local emit_records = ARGV[5] == '1'
local watermark = tonumber(redis.call('GET', KEYS[1]) or '-1')
local applied, skipped, dups = 0, 0, 0
local tokens = {}
local records = 0
local known_codes = {}

-- device_bucket(install) comes from device_bucket.lua, prepended by store.py.

local function parse_state(state)
  -- "code=value;..." -> ordered codes, code -> value
  local order, values = {}, {}
  if state then
    for code, value in string.gmatch(state, '([^;=]+)=([^;]+)') do
      order[#order + 1] = code
      values[code] = value
    end
  end
  return order, values
end

local function render_state(order, values)
  local parts = {}
  for i, code in ipairs(order) do parts[i] = code .. '=' .. values[code] end
  return table.concat(parts, ';')
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

local function index(acct, code, num)
  -- The per-code device counter moves only when the bit was not set before, so it equals the
  -- bitmap's BITCOUNT, committed in the same script (the overview reads it instead of BITCOUNT).
  if redis.call('SETBIT', tag .. ':s:' .. acct .. ':' .. code, num, 1) == 0 then
    redis.call('HINCRBY', tag .. ':cnt:' .. acct, code, 1)
  end
  local ck = acct .. ':' .. code
  if not known_codes[ck] then
    redis.call('SADD', tag .. ':codes:' .. acct, code)
    known_codes[ck] = true
  end
end

local events = cjson.decode(ARGV[6])
for _, e in ipairs(events) do
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
      local ikey = tag .. ':i:' .. acct .. ':' .. device_bucket(install)
      local num = redis.call('HGET', ikey, install)
      local order, values = {}, {}
      local install_postback = false
      local prefix = ''
      if not num then
        num = redis.call('INCR', tag .. ':seq:' .. acct)
        redis.call('HSET', ikey, install, num)
        redis.call('HSET', tag .. ':n:' .. acct .. ':' .. math.floor(num / 512), num % 512, install)
        index(acct, 'install', num)
        order[1] = 'install'
        values['install'] = ts
        -- an install postback on a new device IS the device's install occurrence
        install_postback = code == 'install'
        if not install_postback then
          prefix = '+'
          records = records + 1
        end
      else
        num = tonumber(num)
        order, values = parse_state(redis.call('HGET', tag .. ':v:' .. acct .. ':' .. math.floor(num / 512), num % 512))
      end
      num = tonumber(num)
      local count, ordinal = 1, ''
      if not install_postback then
        local new_value
        new_value, count = bump(values[code], ts)
        if not values[code] then order[#order + 1] = code end
        values[code] = new_value
        if count == 1 then index(acct, code, num) end
        if code == 'dep' then
          ordinal = tostring(count)
          if count >= 2 then
            -- dep_<n> is reached once per device: always a first occurrence
            local dn = 'dep_' .. count
            if not values[dn] then order[#order + 1] = dn end
            values[dn] = ts
            index(acct, dn, num)
          end
        end
      end
      redis.call('HSET', tag .. ':v:' .. acct .. ':' .. math.floor(num / 512), num % 512, render_state(order, values))
      tokens[#tokens + 1] = prefix .. ordinal .. (count == 1 and ':1' or ':0')
      records = records + 1
      applied = applied + 1
    end
  end
end
if emit_records and records > 0 then
  redis.call('XADD', tag .. ':outbox', '*', 'h', ARGV[7], 't', table.concat(tokens, ','))
else
  records = 0
end
if batch_last > watermark then redis.call('SET', KEYS[1], batch_last) end
return {applied, skipped, dups, records}
