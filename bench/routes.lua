-- wrk script used by bench/run.sh for every row, so each row pays the same
-- client-side cost, and by bench/scale.sh for its replay and mock rows. It
-- cycles the benchmark routes (or, for scale.sh, picks `/item/<i>`, as
-- record-load recorded them) and prints one machine-readable result line
-- that both scripts parse.
--
-- Environment:
--   BENCH_ROUTES  space-separated request paths ("/bench/route-00 ...")
--   BENCH_PREFIX  "" for origin-form requests (a server or reverse listener),
--                 "http://HOST:PORT" for absolute-form requests to a forward
--                 proxy (wrk then connects to the proxy given on its command line)
--   BENCH_HOST    Host header; empty means the address wrk connects to
--   SCALE_MODE    instead of BENCH_ROUTES: "hot" cycles over /item/0 up to
--                 /item/<SCALE_HOT - 1>; "unseen" over SCALE_HOT keys from
--                 /item/<SCALE_COUNT> on, which were never recorded;
--                 "uniform" picks /item/<i> at random for i below SCALE_COUNT

local reqs = {}
local count = 0
local next_index = 0
local scale_mode = os.getenv("SCALE_MODE")
local scale_count = tonumber(os.getenv("SCALE_COUNT") or "1")

function init(args)
   math.randomseed(os.time())
   if scale_mode == "hot" or scale_mode == "unseen" then
      -- Internal: the hot set is small; it is cycled like the routes.
      local hot = math.min(tonumber(os.getenv("SCALE_HOT") or "100"), scale_count)
      local first = scale_mode == "unseen" and scale_count or 0
      for i = 0, hot - 1 do
         reqs[i + 1] = wrk.format("GET", "/item/" .. (first + i))
      end
      count = hot
      return
   end
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
   if scale_mode == "uniform" then
      return wrk.format("GET", "/item/" .. math.random(0, scale_count - 1))
   end
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
