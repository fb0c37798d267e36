// One autocannon run against an HTTPS URL with a client certificate; prints a JSON summary.
// usage: node load.js URL CONNECTIONS SECONDS CERT KEY CA
'use strict'
const fs = require('fs')
const autocannon = require('autocannon')

const [url, connections, seconds, cert, key, ca] = process.argv.slice(2)
const opts = {
  url,
  connections: Number(connections),
  duration: Number(seconds),
  pipelining: 1,
  tlsOptions: {
    cert: fs.readFileSync(cert),
    key: fs.readFileSync(key),
    ca: fs.readFileSync(ca),
    servername: 'localhost'
  }
}
autocannon(opts, (err, result) => {
  if (err) { console.error(err); process.exit(1) }
  console.log(JSON.stringify({
    rps: result.requests.average,
    total: result.requests.total,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors,
    timeouts: result.timeouts,
    non2xx: result.non2xx
  }))
})
