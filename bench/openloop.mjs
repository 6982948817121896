// bench/openloop.mjs: latency at a fixed request rate, for the benchmark engine.
// An open loop: npm's loadtest sends a request every 1/RATE seconds whether or not the
// earlier ones have been answered (adding connections as needed), so a server that
// falls behind shows it as queueing delay instead of slowing the client down, as a
// closed-loop tool like wrk does. Prints one JSON line prefixed "OPENLOOPJSON ".
//   node bench/openloop.mjs URL RATE SECONDS [HEADER: VALUE ...]
import { loadTest } from 'loadtest'

const [url, rate, seconds, ...headerArgs] = process.argv.slice(2)
if (!url || !(Number(rate) > 0) || !(Number(seconds) > 0)) {
    console.error('usage: node bench/openloop.mjs URL RATE SECONDS [HEADER: VALUE ...]')
    process.exit(2)
}
const headers = {}
for (const h of headerArgs) {
    const at = h.indexOf(':')
    if (at < 1) {
        console.error(`openloop: not a header: ${h}`)
        process.exit(2)
    }
    headers[h.slice(0, at).trim()] = h.slice(at + 1).trim()
}

const result = await loadTest({
    url,
    requestsPerSecond: Number(rate),
    maxSeconds: Number(seconds),
    agentKeepAlive: true,
    timeout: 30000,
    headers,
    quiet: true,
})
const p = result.percentiles || {}
const codes = result.errorCodes || {}
// errorCodes counts answers >= 400 by status and client-side failures by error code.
let non2xx = 0, socketErrors = 0
for (const [code, n] of Object.entries(codes)) {
    if (/^\d+$/.test(code)) non2xx += n
    else socketErrors += n
}
console.log('OPENLOOPJSON ' + JSON.stringify({
    target_rps: Number(rate),
    requests: result.totalRequests,
    duration_s: result.totalTimeSeconds,
    rps: result.rps,
    mean_ms: result.meanLatencyMs,
    p50_ms: p[50] ?? null,
    p90_ms: p[90] ?? null,
    p99_ms: p[99] ?? null,
    max_ms: result.maxLatencyMs,
    non2xx,
    socket_errors: socketErrors,
    error_codes: codes,
}))
