-- wrk script used by bench/run.sh for every row, so each row pays the same
-- client-side cost. It cycles the benchmark routes and prints one
-- machine-readable result line that run.sh parses.
--
-- Environment:
--   BENCH_ROUTES  space-separated request paths ("/bench/route-00 ...")
--   BENCH_PREFIX  "" for origin-form requests (a server or reverse listener),
--                 "http://HOST:PORT" for absolute-form requests to a forward
--                 proxy (wrk then connects to the proxy given on its command line)
--   BENCH_HOST    Host header; empty means the address wrk connects to

local reqs = {}
local count = 0
local next_index = 0

function init(args)
   local prefix = os.getenv("BENCH_PREFIX") or ""
   local host = os.getenv("BENCH_HOST") or ""
   for path in string.gmatch(os.getenv("BENCH_ROUTES") or "/", "%S+") do
      local headers = {}
      if host ~= "" then
         headers["Host"] = host
      end
      count = count + 1
      reqs[count] = wrk.format("GET", prefix .. path, headers)
   end
end

function request()
   next_index = next_index % count + 1
   return reqs[next_index]
end

function done(summary, latency, _)
   local e = summary.errors
   io.write(string.format(
      "bench-result requests=%d duration_us=%d p50_us=%d p99_us=%d socket_errors=%d status_errors=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.timeout, e.status))
end
