-- POST a webhook with a fresh transaction_id on every request.
dofile("bench/report.lua")  -- done(): the JSON line bench/run.py reads
local counter = 0
local prefix = ""
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
