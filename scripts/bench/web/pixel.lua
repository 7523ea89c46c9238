-- wrk script for scripts/bench-web.sh: GET /pixel?id=ID. Usage:
--   wrk -t2 -c64 -d15s --latency -s pixel.lua https://127.0.0.1:PORT -- IDS_FILE THREADS MODE
-- MODE:
--   varied  (default) like real traffic: ids cycle through the file (each thread from its own
--           offset), and every request comes from another client (X-Forwarded-For: a new address
--           per request, the server trusts 127.0.0.1 as a proxy) with one of a few real User-Agents,
--           so nearly every request is a new (id, client, User-Agent) triple that the server records.
--   repeat  one client fetching one id again and again (the same triple): de-duplicated.
-- done() prints one machine-readable line:
--   WRKLUA requests=N calls=N duration_us=N bytes=N connect=N read=N write=N status=N timeout=N
--          p50_us=N p99_us=N max_us=N
-- requests: responses wrk completed. calls: how often wrk asked this script for a request to write
-- (wrk also calls request() once at startup to check for pipelining: requests sent = calls - 1).

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

local uas = {
   "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
   "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
   "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:125.0) Gecko/20100101 Thunderbird/125.0",
   "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0",
   "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.10.1",
}

function init(args)
   local path = args[1] or error("pixel.lua: pass the ids file after --")
   local nthreads = tonumber(args[2]) or 1
   mode = args[3] or "varied"
   ids = {}
   for id in io.lines(path) do
      if id ~= "" then ids[#ids + 1] = id end
   end
   n = #ids
   if n == 0 then error("pixel.lua: no ids in " .. path) end
   i = math.floor(tid * n / nthreads) % n
   calls = 0
   fixed = wrk.format("GET", "/pixel?id=" .. ids[1],
      { ["User-Agent"] = uas[1], ["X-Forwarded-For"] = "198.51.100.7" })
end

function request()
   calls = calls + 1
   if mode == "repeat" then return fixed end
   local id = ids[i + 1]
   i = (i + 1) % n
   -- 10.T.x.y / 100.T.x.y: a new address for each of up to 2^24 requests of this thread
   local ip = string.format("%d.%d.%d.%d", 10 + tid, math.floor(calls / 65536) % 256,
      math.floor(calls / 256) % 256, calls % 256)
   return wrk.format("GET", "/pixel?id=" .. id,
      { ["User-Agent"] = uas[calls % #uas + 1], ["X-Forwarded-For"] = ip })
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
