-- wrk script for bench/processor's latency runs: background postbacks (reg, every third one a
-- dep) for 50,000 devices of account ACCOUNT; each connection waits DELAY_MS before each request,
-- so C connections offer about C * 1000 / (DELAY_MS + response time) postbacks/s.
local account = os.getenv("ACCOUNT") or "1"
local delay_ms = tonumber(os.getenv("DELAY_MS") or "20")
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
  return delay_ms
end
