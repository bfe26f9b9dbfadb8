-- wrk script: POSTs the bytes of the file named by $WRK_BODY_FILE on every
-- request (keep-alive, no pipelining) and, when the run ends, prints one line
--   WRK_JSON {...}
-- with the request count, rate, latency percentiles in microseconds and the
-- error counts (errors.status = responses that were not 2xx/3xx).
-- $WRK_HEADER, when set, adds one "Name: value" request header.

local path = os.getenv("WRK_BODY_FILE")
if path == nil or path == "" then
    error("set WRK_BODY_FILE to the file holding the request body")
end
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

local extra = os.getenv("WRK_HEADER")
if extra ~= nil and extra ~= "" then
    local name, value = extra:match("^([^:]+):%s*(.*)$")
    wrk.headers[name] = value
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"rps":%.2f,' ..
        '"mean_us":%.2f,"stdev_us":%.2f,"min_us":%d,"max_us":%d,' ..
        '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
        summary.requests, summary.duration, summary.bytes,
        summary.requests / (summary.duration / 1e6),
        latency.mean, latency.stdev, latency.min, latency.max,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9),
        e.connect, e.read, e.write, e.status, e.timeout))
end
