-- bench/wrk/report.lua: makes wrk print its run as one JSON line (prefixed "WRKJSON "),
-- for the benchmark engine. Arguments after `--`:
--   mix PATH=WEIGHT,...   send a weighted random mix of paths instead of the URL's path
--   cache                 count the answers' X-Cache-Status (costs a header parse per answer)
--   hold-gc               no garbage collection during the run, for runs of a second or two:
--                         with `cache`, the collector runs over the header table made for
--                         every answer, and its pauses are in the latencies (figures:
--                         HOLD_GC_MAX_S in perfbench/load.py)
local threads = {}
local mix, count_cache = nil, false

local function parse_args(args)
    local i = 1
    while i <= #args do
        if args[i] == "mix" then
            mix = {}
            local total = 0
            for item in string.gmatch(args[i + 1], "[^,]+") do
                local path, weight = string.match(item, "^(.*)=([%d.]+)$")
                if not path then error("report.lua: not PATH=WEIGHT: " .. item) end
                total = total + tonumber(weight)
                table.insert(mix, { path = path, upto = total })
            end
            for _, m in ipairs(mix) do m.upto = m.upto / total end
            i = i + 2
        elseif args[i] == "cache" then
            count_cache = true
            i = i + 1
        elseif args[i] == "hold-gc" then
            collectgarbage("stop")
            i = i + 1
        else
            error("report.lua: unknown argument " .. args[i])
        end
    end
end

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    parse_args(args)
    hits, misses, others = 0, 0, 0
    if count_cache then
        response = function(status, headers, body)
            local s = headers["X-Cache-Status"]
            if s == "HIT" then
                hits = hits + 1
            elseif s == "MISS" or s == "EXPIRED" or s == "BYPASS" then
                misses = misses + 1
            else
                others = others + 1
            end
        end
    end
    if mix then
        local reqs = {}
        for _, m in ipairs(mix) do reqs[m.path] = wrk.format(nil, m.path) end
        request = function()
            local r = math.random()
            for _, m in ipairs(mix) do
                if r <= m.upto then return reqs[m.path] end
            end
            return reqs[mix[#mix].path]
        end
    end
end

function done(summary, latency, requests)
    local h, m, o = 0, 0, 0
    for _, t in ipairs(threads) do
        h = h + (t:get("hits") or 0)
        m = m + (t:get("misses") or 0)
        o = o + (t:get("others") or 0)
    end
    local e = summary.errors
    local secs = summary.duration / 1e6
    io.write(string.format(
        'WRKJSON {"requests":%d,"duration_s":%.6f,"rps":%.3f,"bytes":%d,' ..
        '"mean_ms":%.4f,"stdev_ms":%.4f,"p50_ms":%.4f,"p90_ms":%.4f,"p99_ms":%.4f,"max_ms":%.4f,' ..
        '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"non2xx":%d,"timeouts":%d,' ..
        '"cache_hits":%d,"cache_misses":%d,"cache_other":%d}\n',
        summary.requests, secs, summary.requests / secs, summary.bytes,
        latency.mean / 1000, latency.stdev / 1000, latency:percentile(50) / 1000,
        latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
        e.connect, e.read, e.write, e.status, e.timeout, h, m, o))
end
