-- wrk script: cycle through a list of request targets; report JSON.
--
-- Usage: wrk -t1 -cC -dD -s wrk_urls.lua http://127.0.0.1:PORT -- URLS_FILE [LIMIT]
--   URLS_FILE  one request target (path and query) per line
--   LIMIT      stop after this many responses (0: run for the whole duration);
--              a cold or first pass sets it to the number of URLs, so each is
--              asked once. With a LIMIT, no more than LIMIT requests are ever
--              sent: at c > 1, connections that would send more wait (delay())
--              instead of wrapping round to the top of the list, whose answers
--              would then be counted in place of the slowest last ones.
-- The last line printed is "BENCH_JSON {...}" with counts, bytes and latency
-- percentiles in microseconds. Run with one thread (-t1): every thread would
-- otherwise start at the top of the same list.
--
-- wrk's main thread sleeps for the whole -d duration even when every thread
-- has stopped, so on reaching LIMIT the script also prints "BENCH_LIMIT" to
-- stderr: bench/load.py then sends SIGINT, which ends wrk's sleep at once.

local urls = {}
local next_index = 0
local limit = 0
local responses = 0
local reserved = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      urls[#urls + 1] = line
    end
  end
  limit = tonumber(args[2] or "0") or 0
  if limit <= 0 then
    -- wrk asks whether delay() exists after init(): without a limit, keep the
    -- plain request loop (no timer hop per request).
    delay = nil
  end
end

-- Called before each request of a connection (wrk then calls request()):
-- the first LIMIT pass at once, any later one waits far longer than a step.
function delay()
  if reserved >= limit then
    return 86400000
  end
  reserved = reserved + 1
  return 0
end

function request()
  next_index = next_index % #urls + 1
  return wrk.format("GET", urls[next_index])
end

function response(status, headers, body)
  responses = responses + 1
  if limit > 0 and responses == limit then
    io.stderr:write("BENCH_LIMIT\n")
    io.stderr:flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p95":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
