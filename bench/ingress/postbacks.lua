-- wrk script: varied valid postbacks for DEVICES devices of account ACCOUNT.
-- Mix per request: 40% a custom event (CODES, comma-separated), 25% reg, 15% install,
-- 20% dep with amount, currency and a unique tid; one in four carries ts in seconds.
local account = os.getenv("ACCOUNT") or "1"
local devices = tonumber(os.getenv("DEVICES") or "10000")
local codes = {}
for code in string.gmatch(os.getenv("CODES") or "first_open", "[^,]+") do codes[#codes + 1] = code end
local now_s = tonumber(os.getenv("NOW_S") or tostring(os.time()))
local counter = 0
local thread_tag = "x"

function setup(thread)
  thread:set("thread_tag", tostring(math.random(1, 1e9)))
end

function init(args)
  math.randomseed(tonumber(thread_tag) or os.time())
end

request = function()
  counter = counter + 1
  local device = math.random(1, devices)
  local r = math.random(1, 100)
  local path
  if r <= 40 then
    path = "/api/postback/?id=dev-" .. device .. "&status=" .. codes[math.random(1, #codes)] .. "_" .. account
  elseif r <= 65 then
    path = "/api/postback/?id=dev-" .. device .. "&status=reg_" .. account
  elseif r <= 80 then
    path = "/api/postback/?id=dev-" .. device .. "&status=install_" .. account .. "&click_id=abc" .. counter
  else
    path = "/api/postback/?id=dev-" .. device .. "&status=dep_" .. account .. "&amount=" .. math.random(1, 500) .. ".99&currency=USD&tid=" .. thread_tag .. "-" .. counter
  end
  if r % 4 == 0 then
    path = path .. "&ts=" .. (now_s - math.random(0, 86400))
  end
  return wrk.format("GET", path)
end
