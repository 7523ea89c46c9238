-- wrk script for scripts/bench-web.sh: wrong logins from one address, as fast as they are answered.
--   wrk -t2 -c16 -d10s -s login.lua https://127.0.0.1:PORT -- 'Basic base64(user:wrong)'
-- done() prints: WRKLOGIN requests=N duration_us=N s401=N s429=N s200=N other=N p50_us=N p99_us=N

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   req = wrk.format("GET", "/", { ["Authorization"] = args[1] })
   s401, s429, s200, other = 0, 0, 0, 0
end

function request()
   return req
end

function response(status, headers, body)
   if status == 401 then s401 = s401 + 1
   elseif status == 429 then s429 = s429 + 1
   elseif status == 200 then s200 = s200 + 1
   else other = other + 1 end
end

function done(summary, latency, requests)
   local t = { s401 = 0, s429 = 0, s200 = 0, other = 0 }
   for _, th in ipairs(threads) do
      for k, _ in pairs(t) do t[k] = t[k] + th:get(k) end
   end
   io.write(string.format(
      "WRKLOGIN requests=%d duration_us=%d s401=%d s429=%d s200=%d other=%d p50_us=%d p99_us=%d\n",
      summary.requests, summary.duration, t.s401, t.s429, t.s200, t.other,
      latency:percentile(50), latency:percentile(99)))
end
