// Open-loop paced load for the latency-at-half-load figure: requests start on a fixed schedule
// (every millisecond, the ones that are due), whether or not earlier ones have finished, over a
// bounded pool of keep-alive HTTPS connections presenting a client certificate. autocannon's
// rate limit releases each second's requests in a burst, which measures the burst, not the server.
// usage: node paced.js URL CONNECTIONS SECONDS RATE CERT KEY CA; prints a JSON summary
'use strict'
const fs = require('fs')
const https = require('https')

const [url, connections, seconds, rate, cert, key, ca] = process.argv.slice(2)
const agent = new https.Agent({
  keepAlive: true,
  maxSockets: Number(connections),
  cert: fs.readFileSync(cert),
  key: fs.readFileSync(key),
  ca: fs.readFileSync(ca),
  servername: 'localhost'
})
const target = new URL(url)
const duration = Number(seconds) * 1000
const perMs = Number(rate) / 1000
const latencies = []
let sent = 0
let done = 0
let errors = 0
let non2xx = 0
let start = 0

function one () {
  const began = performance.now()
  const req = https.request({
    agent, host: target.hostname, port: target.port, path: target.pathname, method: 'GET'
  }, (res) => {
    if (res.statusCode < 200 || res.statusCode > 299) non2xx++
    res.resume()
    res.on('end', () => { latencies.push(performance.now() - began); finish() })
  })
  req.on('error', () => { errors++; finish() })
  req.end()
}

function finish () {
  done++
  if (done === sent && performance.now() - start >= duration) report()
}

function report () {
  latencies.sort((a, b) => a - b)
  const at = (q) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : 0
  console.log(JSON.stringify({
    requests: latencies.length, rps: latencies.length / (duration / 1000), p50: at(0.5), p90: at(0.9), p95: at(0.95), p99: at(0.99), max: at(1), errors, non2xx, lost: sent - done
  }))
  agent.destroy()
  process.exit(0)
}

function run () {
  start = performance.now()
  const timer = setInterval(() => {
    const elapsed = performance.now() - start
    if (elapsed >= duration) {
      clearInterval(timer)
      if (done === sent) report()
      setTimeout(report, 10000).unref() // bounded: answers still missing after 10 s are lost
      return
    }
    const due = Math.floor(elapsed * perMs)
    while (sent < due) { sent++; one() }
  }, 1)
}

// open every connection first (full handshakes are not what this measures), then the schedule
let warming = Number(connections)
for (let i = 0; i < Number(connections); i++) {
  const req = https.request({
    agent, host: target.hostname, port: target.port, path: target.pathname, method: 'GET'
  }, (res) => { res.resume(); res.on('end', () => { if (--warming === 0) run() }) })
  req.on('error', (err) => { console.error(err); process.exit(1) })
  req.end()
}
