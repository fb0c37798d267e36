// Open-loop paced load for the latency-at-half-load figure: requests are due on a fixed schedule
// (each millisecond, the ones whose time has come), whether or not earlier ones have finished.
// Latency counts from the moment a request was due, so waiting for a free connection counts too.
// It is also split in two: due -> sent (the generator's own lateness: its timer ticks every 1-2 ms,
// and a request waits for a free connection) and sent -> answered (the server and the network).
// The first second runs at the same rate and is not counted (the generator's own warm-up).
// Raw TLS sockets with a client certificate and a minimal HTTP/1.1 reader (answers must carry
// Content-Length), so the generator stays cheap: node's https module was the bottleneck at a few
// thousand requests/s. autocannon's rate limit releases each second's requests in one burst,
// which measures the burst, not the server.
// usage: node paced.js URL CONNECTIONS SECONDS RATE CERT KEY CA; prints a JSON summary
'use strict'
const fs = require('fs')
const tls = require('tls')

const [url, connections, seconds, rate, cert, key, ca] = process.argv.slice(2)
const target = new URL(url)
const options = {
  host: target.hostname === 'localhost' ? '127.0.0.1' : target.hostname,
  port: Number(target.port),
  servername: 'localhost',
  cert: fs.readFileSync(cert),
  key: fs.readFileSync(key),
  ca: fs.readFileSync(ca)
}
const request = Buffer.from(`GET ${target.pathname} HTTP/1.1\r\nHost: localhost\r\n\r\n`)
const WARMUP = 1000 // ms at the same rate before measuring: Node compiles its hot paths then
const duration = WARMUP + Number(seconds) * 1000
const perMs = Number(rate) / 1000
const latencies = []
const lateness = [] // due -> sent
const service = [] // sent -> answered
const idle = []
const due = [] // times at which queued requests were due
let scheduled = 0
let done = 0
let errors = 0
let non2xx = 0
let start = 0

function connect () {
  return new Promise((resolve, reject) => {
    const sock = tls.connect(options, () => resolve(sock))
    sock.setNoDelay(true)
    sock.once('error', reject)
    sock.buf = Buffer.alloc(0)
    sock.on('data', (data) => { sock.buf = Buffer.concat([sock.buf, data]); read(sock) })
  })
}

function read (sock) {
  for (;;) {
    const end = sock.buf.indexOf('\r\n\r\n')
    if (end < 0) return
    const head = sock.buf.subarray(0, end).toString('latin1')
    const m = /\r\ncontent-length:\s*(\d+)/i.exec(head)
    if (!m) { errors++; sock.destroy(); return }
    const total = end + 4 + Number(m[1])
    if (sock.buf.length < total) return
    sock.buf = sock.buf.subarray(total)
    const status = Number(head.slice(9, 12))
    if (status < 200 || status > 299) non2xx++
    if (sock.began !== undefined && sock.began >= start + WARMUP) {
      const now = performance.now()
      latencies.push(now - sock.began)
      lateness.push(sock.sent - sock.began)
      service.push(now - sock.sent)
    }
    sock.began = undefined
    done++
    release(sock)
  }
}

function send (sock, dueAt) {
  sock.began = dueAt
  sock.sent = performance.now()
  sock.write(request)
}

function release (sock) {
  if (due.length) send(sock, due.shift())
  else idle.push(sock)
  if (finishedSending() && done === scheduled) report()
}

function finishedSending () { return start && performance.now() - start >= duration }

function quantile (values, q) {
  return values.length ? values[Math.min(values.length - 1, Math.floor(q * values.length))] : 0
}

function report () {
  for (const values of [latencies, lateness, service]) values.sort((a, b) => a - b)
  console.log(JSON.stringify({
    requests: latencies.length,
    rps: latencies.length / ((duration - WARMUP) / 1000),
    p50: quantile(latencies, 0.5),
    p90: quantile(latencies, 0.9),
    p99: quantile(latencies, 0.99),
    max: quantile(latencies, 1),
    late_p50: quantile(lateness, 0.5),
    late_p99: quantile(lateness, 0.99),
    sent_p50: quantile(service, 0.5),
    sent_p99: quantile(service, 0.99),
    errors,
    non2xx,
    lost: scheduled - done
  }))
  process.exit(0)
}

async function main () {
  const socks = await Promise.all(Array.from({ length: Number(connections) }, connect))
  idle.push(...socks)
  start = performance.now()
  const timer = setInterval(() => {
    const now = performance.now()
    const elapsed = now - start
    if (elapsed >= duration) {
      clearInterval(timer)
      if (done === scheduled) report()
      setTimeout(report, 10000).unref() // bounded: answers still missing after 10 s are lost
      return
    }
    const target = Math.floor(elapsed * perMs)
    while (scheduled < target) {
      scheduled++
      const dueAt = start + scheduled / perMs
      const sock = idle.pop()
      if (sock) send(sock, dueAt)
      else due.push(dueAt)
    }
  }, 1)
}

main().catch((err) => { console.error(err); process.exit(1) })
