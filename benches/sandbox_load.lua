-- wrk script for benches/sandbox_load.sh: signed generate calls, one new VIN per request.
-- appId, timestamp and sign come precomputed from the environment (valid for 10 minutes).
local app_id = os.getenv("VMR_LOAD_APP_ID")
local ts = os.getenv("VMR_LOAD_TS")
local sign = os.getenv("VMR_LOAD_SIGN")
local wmis = { "LSV", "LFV", "LHG", "LBV", "LE4", "LGB", "LVS", "LFM", "LC0", "LB3" }
local prefix = "appId=" .. app_id .. "&timestamp=" .. ts .. "&sign=" .. sign
local n = 0
local thread_tag = 0

setup = function(thread)
  thread_tag = thread_tag + 1
  thread:set("tag", thread_tag)
end

wrk.method = "POST"
wrk.path = "/vehicle/maintenance-report/generate"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

request = function()
  n = n + 1
  local vin = string.format("%sA%d%012d", wmis[n % #wmis + 1], tag or 0, n)
  local body = prefix .. "&vin=" .. vin .. "&licenseImgUrl=https%3A%2F%2Fimg.example.com%2Fl.jpg"
  return wrk.format(nil, nil, nil, body)
end
