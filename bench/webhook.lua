-- POST a webhook with a fresh transaction_id on every request.
-- Optional: WRK_LIMIT=<n> stops each thread after n responses (a burst of a known size).
local counter = 0
local prefix = ""
local limit = tonumber(os.getenv("WRK_LIMIT") or "0")
local threads = 0

-- Runs in the main state: give every thread a number (a global in its own state).
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + thread_number)
  prefix = string.format("%x_%d_%x", os.time(), thread_number, math.random(0, 0x7fffffff))
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"transaction_id":"bench_%s_%d","source_account":"acc_bench_src",' ..
    '"destination_account":"acc_bench_dst","amount":1500.25,"currency":"USD"}',
    prefix, counter)
  return wrk.format("POST", "/v1/webhooks/transactions",
    {["Content-Type"] = "application/json"}, body)
end

local responses = 0
function response(status, headers, body)
  responses = responses + 1
  if limit > 0 and responses >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
