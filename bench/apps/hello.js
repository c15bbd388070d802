// Hello-world app used by the cluster, balancer, recovery and reload scenarios.
// Reads its settings from bench.json beside it (port, stats dir, drain) so that no manager has to pass
// environment variables through. Counts requests and writes the count to <stats>/<pid> four times a
// second (one small synchronous write: no measurable effect at these rates), which is how the harness
// learns each worker's share of requests and which worker pids are alive.
'use strict';
const http = require('http');
const fs = require('fs');
const path = require('path');
const cfg = JSON.parse(fs.readFileSync(path.join(__dirname, 'bench.json'), 'utf8'));

let count = 0;
let draining = false;
const statsFile = path.join(cfg.stats, String(process.pid));
let written = -1;
function flush() {
  if (count === written) return;
  written = count;
  try { fs.writeFileSync(statsFile, String(count)); } catch (_) { /* stats dir removed: harness is done */ }
}
setInterval(flush, 250).unref();

const body = 'hello ' + process.pid;
// The autoscale scenario's CPU cost of a request to /burn (busy loop, ms); 0 elsewhere.
const burnNs = BigInt(Math.round((cfg.burn_ms || 0) * 1e6));
const server = http.createServer((req, res) => {
  count++;
  if (burnNs > 0n && req.url === '/burn') {
    const end = process.hrtime.bigint() + burnNs;
    while (process.hrtime.bigint() < end) { /* burn */ }
  }
  if (draining) res.setHeader('Connection', 'close');
  res.end(body);
});
// Only a worker that really listens counts as one (a worker that fails with EADDRINUSE never writes).
server.listen(cfg.port, flush);

if (cfg.drain) {
  // A well-behaved app: on a stop signal stop accepting, answer every further request on a keep-alive
  // connection with "Connection: close" so the client moves on cleanly, close connections still idle
  // after a grace period, then exit (bounded by a timer). net.Server's close is used because
  // http.Server#close (Node >= 19) also drops idle keep-alive connections at once, which races with a
  // client that is just sending its next request on one.
  const net = require('net');
  const drain = () => {
    if (draining) return;
    draining = true;
    flush();
    net.Server.prototype.close.call(server, () => process.exit(0));
    setTimeout(() => server.closeIdleConnections && server.closeIdleConnections(), 1000).unref();
    setTimeout(() => process.exit(0), 4000).unref();
  };
  process.on('SIGINT', drain);
  process.on('SIGTERM', drain);
  process.on('message', (m) => { if (m === 'shutdown') drain(); });
}
