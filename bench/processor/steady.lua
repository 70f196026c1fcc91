-- wrk script for bench/processor's latency runs: background postbacks (reg, every third one a
-- dep) for 50,000 devices of account ACCOUNT, paced at RATE requests/s in total (this script
-- runs with one wrk thread): each connection that is free asks `delay()` for the next slot
-- of an evenly spaced schedule, so the offered rate is RATE whatever the response time, as
-- long as enough connections are free (give wrk rate x worst expected latency of them).
-- A schedule that fell behind (every connection busy) catches up by at most 1 s of slots (an open-loop load does not drop what it fell behind by).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } pbseg_timespec;
int clock_gettime(int clk_id, pbseg_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("pbseg_timespec")
local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local account = os.getenv("ACCOUNT") or "1"
local interval_ms = 1000 / tonumber(os.getenv("RATE") or "1000")
local next_slot = 0
local counter = 0

function init(args)
  math.randomseed(os.time() + math.random(1, 1e6))
end

request = function()
  counter = counter + 1
  local code = (counter % 3 == 0) and "dep" or "reg"
  return wrk.format("GET", "/api/postback/?id=d" .. math.random(1, 50000) .. "&status=" .. code .. "_" .. account)
end

delay = function()
  local now = now_ms()
  next_slot = math.max(next_slot + interval_ms, now - 1000)
  return math.max(next_slot - now, 0)
end
