-- wrk script for scripts/bench-web.sh: GET /pixel?id=ID, cycling through the ids of a file (one per
-- line), each thread starting at its own offset. Usage:
--   wrk -t2 -c64 -d15s --latency -s pixel.lua https://127.0.0.1:PORT -- IDS_FILE THREADS
-- done() prints one machine-readable line:
--   WRKLUA requests=N calls=N duration_us=N bytes=N connect=N read=N write=N status=N timeout=N
--          p50_us=N p99_us=N max_us=N
-- requests: responses wrk completed (the "N requests in ..." number). calls: how often wrk asked
-- this script for a request to write. wrk also calls request() once at startup, on the first thread,
-- to check the request for pipelining; that call writes nothing, so requests sent = calls - 1.

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

function init(args)
   local path = args[1] or error("pixel.lua: pass the ids file after --")
   local nthreads = tonumber(args[2]) or 1
   reqs = {}
   for id in io.lines(path) do
      if id ~= "" then
         reqs[#reqs + 1] = wrk.format("GET", "/pixel?id=" .. id)
      end
   end
   n = #reqs
   if n == 0 then error("pixel.lua: no ids in " .. path) end
   -- the next index (0-based); threads start spread over the list
   i = math.floor(tid * n / nthreads) % n
   calls = 0
end

function request()
   calls = calls + 1
   local r = reqs[i + 1]
   i = (i + 1) % n
   return r
end

function done(summary, latency, requests)
   local calls = 0
   for _, t in ipairs(threads) do
      calls = calls + t:get("calls")
   end
   local e = summary.errors
   io.write(string.format(
      "WRKLUA requests=%d calls=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d " ..
      "timeout=%d p50_us=%d p99_us=%d max_us=%d\n",
      summary.requests, calls, summary.duration, summary.bytes, e.connect, e.read, e.write,
      e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
