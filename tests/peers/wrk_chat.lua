-- wrk script for tests/bench_peers.py: POSTs chat requests.
--   WRK_BODY=<file>    one JSON request body per line
--   WRK_OFFSET=<n>     the first line to send (0-based)
--   WRK_REPEAT=1       every request sends line WRK_OFFSET (a cache hit after the first)
-- Without WRK_REPEAT, thread k of N sends lines offset+k, offset+k+N, ...: no body twice until
-- the file runs out (then it wraps; bench_peers.py checks the count against the file).
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter - 1)
end

function init(args)
  bodies = {}
  for line in io.lines(os.getenv("WRK_BODY")) do
    table.insert(bodies, line)
  end
  offset = tonumber(os.getenv("WRK_OFFSET") or "0")
  repeat_one = os.getenv("WRK_REPEAT") == "1"
  stride = tonumber(os.getenv("WRK_THREADS") or "1")
  sent = 0
  wrk.method = "POST"
  wrk.headers["content-type"] = "application/json"
  wrk.headers["authorization"] = "Bearer sk-bench"
end

function request()
  local i = offset
  if not repeat_one then
    i = offset + id + sent * stride
    sent = sent + 1
  end
  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])
end
