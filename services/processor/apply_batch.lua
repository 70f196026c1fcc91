-- Applies a batch of postbacks of ONE partition atomically, with the applied-offset watermark.
-- Redis runs a script to completion, so a crash leaves either the whole batch (and its
-- watermark) or none of it: redelivered offsets at or below the watermark change nothing.
--
-- KEYS[1] = applied-offset key of this topic/partition (its hash tag is the partition's tag).
-- Only the watermark is declared in KEYS: the other keys are derived from the records
-- (device, bitmaps, tids, outbox) and all carry the same hash tag ARGV[1], so they live in
-- the same Redis Cluster slot as KEYS[1] (docs/architecture.md, "Exactly once").
-- ARGV[1] = partition hash tag, e.g. "{pbseg:p3}"
-- ARGV[2] = tid retention in ms
-- ARGV[3] = processing time (ms, from the injected clock)
-- ARGV[4] = the batch's last offset: the watermark moves there even when the last records
--           were rejected (they are in ARGV only when they are applicable)
-- ARGV[5] = "1" to append device-event records to the outbox, "0" not to (rebuild)
-- ARGV[6..] = events, 10 fields each:
--   offset, event_id, account, install_id, event, occurred_at, received_at, tid ("" = none), amount, currency
-- Device hash values: "<first_ms>" while count is 1, else "<first_ms>:<last_ms>:<count>".
-- Returns {applied, skipped_offsets, duplicate_tids, outbox_records}.
local tag = ARGV[1]
local tid_ttl = tonumber(ARGV[2])
local now_text = ARGV[3]
local batch_last = tonumber(ARGV[4])
local emit_records = ARGV[5] == '1'
local watermark = tonumber(redis.call('GET', KEYS[1]) or '-1')
local outbox = tag .. ':outbox'
local applied, skipped, dups, emitted = 0, 0, 0, 0

local function mark(acct, dkey, num, code, ts)
  -- Records one occurrence of `code`; returns (first_occurrence, count).
  local cur = redis.call('HGET', dkey, code)
  if not cur then
    redis.call('HSET', dkey, code, ts)
    redis.call('SETBIT', tag .. ':s:' .. acct .. ':' .. code, num, 1)
    redis.call('SADD', tag .. ':codes:' .. acct, code)
    return true, 1
  end
  local first, last, count = string.match(cur, '^(%d+):(%d+):(%d+)$')
  if not first then first, last, count = cur, cur, '1' end
  count = tonumber(count) + 1
  local t = tonumber(ts)
  if t > tonumber(last) then last = ts end
  if t < tonumber(first) then first = ts end
  redis.call('HSET', dkey, code, first .. ':' .. last .. ':' .. count)
  return false, count
end

local function str_or_null(v)
  if v == '' then return 'null' end
  return cjson.encode(v)
end

local function emit(event_id, acct, install, code, ordinal, first, ts, tid, amount, currency)
  if not emit_records then return end
  -- Numbers are spliced as the decimal text they arrived in (account ids may exceed 2^53,
  -- which Lua numbers and cjson would round); strings go through cjson for escaping.
  local record = '{"schema":"device-event.v1","event_id":' .. cjson.encode(event_id) ..
    ',"account_id":' .. acct .. ',"install_id":' .. cjson.encode(install) ..
    ',"event":' .. cjson.encode(code) .. ',"deposit_ordinal":' .. (ordinal and tostring(ordinal) or 'null') ..
    ',"first_occurrence":' .. (first and 'true' or 'false') .. ',"occurred_at":' .. ts ..
    ',"processed_at":' .. now_text .. ',"tid":' .. str_or_null(tid) .. ',"amount":' .. str_or_null(amount) ..
    ',"currency":' .. str_or_null(currency) .. '}'
  redis.call('XADD', outbox, '*', 'k', acct .. ':' .. install, 'v', record)
  emitted = emitted + 1
end

for i = 6, #ARGV, 10 do
  local offset = tonumber(ARGV[i])
  if offset <= watermark then
    skipped = skipped + 1
  else
    local event_id, acct, install, code = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    local ts, received, tid, amount, currency = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9]
    local duplicate = false
    if tid ~= '' then
      -- The value is the ingress receive time of the first occurrence, so a replay of the
      -- log (pbseg rebuild) reaches the same dedupe decisions as live processing did.
      local tkey = tag .. ':t:' .. acct .. ':' .. install .. ':' .. code .. ':' .. tid
      local prev = redis.call('GET', tkey)
      if prev and tonumber(received) - tonumber(prev) < tid_ttl then
        duplicate = true
      else
        redis.call('SET', tkey, received, 'PX', tid_ttl)
      end
    end
    if duplicate then
      dups = dups + 1
    else
      local dkey = tag .. ':d:' .. acct .. ':' .. install
      local num = redis.call('HGET', dkey, '#')
      local created = false
      if not num then
        created = true
        num = redis.call('INCR', tag .. ':seq:' .. acct)
        redis.call('HSET', dkey, '#', num)
        redis.call('HSET', tag .. ':n:' .. acct .. ':' .. math.floor(num / 512), num % 512, install)
        mark(acct, dkey, num, 'install', ts)
        if code == 'install' then
          emit(event_id, acct, install, 'install', nil, true, ts, tid, amount, currency)
        else
          emit(event_id .. ':install', acct, install, 'install', nil, true, ts, '', '', '')
        end
      end
      num = tonumber(num)
      if not (created and code == 'install') then
        local first, count = mark(acct, dkey, num, code, ts)
        local ordinal = nil
        if code == 'dep' then
          ordinal = count
          if count >= 2 then mark(acct, dkey, num, 'dep_' .. count, ts) end
        end
        emit(event_id, acct, install, code, ordinal, first, ts, tid, amount, currency)
      end
      applied = applied + 1
    end
  end
end
if batch_last > watermark then redis.call('SET', KEYS[1], batch_last) end
return {applied, skipped, dups, emitted}
