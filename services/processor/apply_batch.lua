-- Applies a batch of postbacks of ONE partition atomically, with the applied-offset watermark.
-- KEYS[1] = applied-offset key of this topic/partition (its hash tag is the partition's tag)
-- ARGV[1] = partition hash tag, e.g. "{pbseg:p3}"
-- ARGV[2] = tid retention in ms
-- ARGV[3] = processing time (ms, from the injected clock)
-- ARGV[4..] = events, 10 fields each:
--   offset, event_id, account, install_id, event, occurred_at, tid ("" = none), amount, currency, spare
-- Returns {applied, skipped_offsets, duplicate_tids}.
local tag = ARGV[1]
local tid_ttl = tonumber(ARGV[2])
local now = ARGV[3]
local watermark = tonumber(redis.call('GET', KEYS[1]) or '-1')
local outbox = tag .. ':outbox'
local applied, skipped, dups = 0, 0, 0
local max_offset = watermark

local function mark(acct, dkey, num, code, ts)
  -- Records one occurrence of `code`; returns (first_occurrence, count).
  local cur = redis.call('HGET', dkey, code)
  if not cur then
    redis.call('HSET', dkey, code, ts .. ':' .. ts .. ':1')
    redis.call('SETBIT', tag .. ':s:' .. acct .. ':' .. code, num, 1)
    redis.call('SADD', tag .. ':codes:' .. acct, code)
    return true, 1
  end
  local first, last, count = string.match(cur, '^(%d+):(%d+):(%d+)$')
  count = tonumber(count) + 1
  if tonumber(ts) > tonumber(last) then last = ts end
  if tonumber(ts) < tonumber(first) then first = ts end
  redis.call('HSET', dkey, code, first .. ':' .. last .. ':' .. count)
  return false, count
end

local function emit(event_id, acct, install, code, ordinal, first, ts, tid, amount, currency)
  redis.call('XADD', outbox, '*', 'event_id', event_id, 'account_id', acct, 'install_id', install,
    'event', code, 'deposit_ordinal', ordinal, 'first_occurrence', first and '1' or '0',
    'occurred_at', ts, 'processed_at', now, 'tid', tid, 'amount', amount, 'currency', currency)
end

for i = 4, #ARGV, 10 do
  local offset = tonumber(ARGV[i])
  if offset <= watermark then
    skipped = skipped + 1
  else
    if offset > max_offset then max_offset = offset end
    local event_id, acct, install, code = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    local ts, tid, amount, currency = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8]
    local duplicate = false
    if tid ~= '' then
      local tkey = tag .. ':t:' .. acct .. ':' .. install .. ':' .. code .. ':' .. tid
      if redis.call('SET', tkey, '1', 'NX', 'PX', tid_ttl) == false then duplicate = true end
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
          emit(event_id, acct, install, 'install', '', true, ts, tid, amount, currency)
        else
          emit(event_id .. ':install', acct, install, 'install', '', true, ts, '', '', '')
        end
      end
      num = tonumber(num)
      if not (created and code == 'install') then
        local first, count = mark(acct, dkey, num, code, ts)
        local ordinal = ''
        if code == 'dep' then
          ordinal = tostring(count)
          if count >= 2 then mark(acct, dkey, num, 'dep_' .. count, ts) end
        end
        emit(event_id, acct, install, code, ordinal, first, ts, tid, amount, currency)
      end
      applied = applied + 1
    end
  end
end
if max_offset > watermark then redis.call('SET', KEYS[1], max_offset) end
return {applied, skipped, dups}
