-- GET a random one of the transactions the benchmark seeded (bench_get_0 .. bench_get_<n-1>).
dofile("bench/report.lua")  -- done(): the JSON line bench/run.py reads
local seeded = tonumber(os.getenv("WRK_SEEDED") or "1000")

function init(args)
  math.randomseed(os.time() * 1000 + (thread_number or 0))
end

function setup(thread)
  thread:set("thread_number", math.random(1, 1000000))
end

function request()
  return wrk.format("GET", string.format("/v1/transactions/bench_get_%d", math.random(0, seeded - 1)))
end
