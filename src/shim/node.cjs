// cohort's Node.js preload (`node --require <this file> app.js`): graceful drain on shutdown.
//
// On SIGINT/SIGTERM, or the IPC user message 'shutdown', when the app has NO handler of its own for
// it: stop accepting on every server, answer in-flight and later requests on each keep-alive
// connection with `Connection: close`, end connections as they go idle, and exit(0) once every
// server has closed, or at ~90% of COHORT_KILL_TIMEOUT ms (the daemon SIGKILLs at 100%).
// When the app has its own handler, only the app's handler runs. Nothing else changes.
// After an autoscaling step up, the message {cohort: 'rebalance', share} closes that share of the
// worker's keep-alive connections after their next response, so clients spread to the new workers.
'use strict';
(function cohortShim() {
  const net = require('net');
  const tls = require('tls');

  const killTimeout = Number(process.env.COHORT_KILL_TIMEOUT) > 0 ? Number(process.env.COHORT_KILL_TIMEOUT) : 1600;
  // Connections idle when the drain starts keep this long to send one more request (answered
  // with `Connection: close`) before we end them: ending them at once races with a request
  // the client is sending right now, which it would see fail.
  const idleGrace = Math.min(1000, killTimeout / 4);

  const servers = new Map(); // server -> Set of its connections
  let draining = false;

  const origListen = net.Server.prototype.listen;
  net.Server.prototype.listen = function listen() {
    track(this);
    return origListen.apply(this, arguments);
  };

  // Nothing here runs per request: tracking costs one listener per server and two per connection,
  // so an app serving at full speed pays nothing for being drainable. Per-request work (the
  // `Connection: close` header) starts only once draining does.
  function track(server) {
    if (servers.has(server)) return;
    const conns = new Set();
    servers.set(server, conns);
    server.once('close', () => { servers.delete(server); maybeExit(); });
    server.on(server instanceof tls.Server ? 'secureConnection' : 'connection', (sock) => {
      conns.add(sock);
      sock.once('close', () => conns.delete(sock));
    });
  }

  // A connection is busy while an HTTP response is attached to it (Node sets `_httpMessage` from
  // the response's start until it finished).
  function endIfIdle(sock) {
    if (!sock._httpMessage && !sock.destroyed) sock.end();
  }

  // During the drain every response says `Connection: close`, so Node ends its connection after it.
  function closeAfterResponse(req, res) {
    if (!res.headersSent) res.setHeader('Connection', 'close');
  }

  let exitTimer = null;
  function maybeExit() {
    if (draining && servers.size === 0 && !exitTimer) {
      // Let the last responses flush before exiting.
      exitTimer = setImmediate(() => process.exit(0));
    }
  }

  function drain() {
    if (draining) return;
    draining = true;
    for (const [server, conns] of servers) {
      if (server.listenerCount('request') > 0) server.prependListener('request', closeAfterResponse);
      // net's close(), not http's: Node >= 19's http close() also drops idle keep-alive
      // connections at once, which races with requests clients are sending on them.
      if (server.listening) net.Server.prototype.close.call(server);
      else servers.delete(server);
      for (const sock of conns) {
        const res = sock._httpMessage; // the response in flight on this connection, if any
        if (res && !res.headersSent) res.setHeader('Connection', 'close');
      }
    }
    // Idle keep-alive connections get a moment to send one more request (answered with
    // `Connection: close`); ending them at once would race with a request on its way. After that,
    // idle connections are ended as they become idle.
    setTimeout(() => {
      const sweep = () => { for (const conns of servers.values()) for (const sock of conns) endIfIdle(sock); };
      sweep();
      setInterval(sweep, 50).unref();
    }, idleGrace).unref();
    setTimeout(() => {
      for (const conns of servers.values()) for (const sock of conns) sock.destroy();
      process.exit(0);
    }, Math.max(0, killTimeout * 0.9 - 50)).unref();
    maybeExit();
  }

  // Rebalance after a scale up (IPC message {cohort: 'rebalance', share}): keep-alive connections
  // stay on the worker that accepted them, so new workers would get only new connections. A share
  // of this worker's open connections answer their next response with `Connection: close`; their
  // clients reconnect and the kernel spreads them over every ready worker. Nothing is cut: a
  // connection closes only after a complete response. Costs one check per request from the first
  // rebalance on.
  let rebalancing = false;
  function closeMarked(req, res) {
    if (req.socket && req.socket._cohortClose && !res.headersSent) res.setHeader('Connection', 'close');
  }
  function rebalance(share) {
    if (!(share > 0 && share <= 1) || draining) return;
    for (const [server, conns] of servers) {
      if (!rebalancing && server.listenerCount('request') > 0) server.prependListener('request', closeMarked);
      let n = Math.round(conns.size * share);
      for (const sock of conns) {
        if (n <= 0) break;
        if (!sock._cohortClose) { sock._cohortClose = true; n--; }
      }
    }
    rebalancing = true;
  }

  function onSignal(sig) {
    // The app handles this signal itself: its handler decides (and runs after this one).
    if (process.listeners(sig).some((l) => l !== onSignal)) return;
    drain();
  }
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  if (typeof process.send === 'function') {
    const before = new Set(process.listeners('message'));
    const onMessage = (msg) => {
      if (msg && msg.cohort === 'rebalance') return rebalance(Number(msg.share));
      if (msg !== 'shutdown') return;
      const mine = process.listeners('message').filter((l) => l !== onMessage && !before.has(l));
      const cluster = require('cluster');
      const workerListeners = cluster.isWorker && cluster.worker ? cluster.worker.listenerCount('message') : 0;
      if (mine.length === 0 && workerListeners === 0) drain();
    };
    process.on('message', onMessage);
    // Our listener must not keep the process alive (Node refs the channel per 'message' listener).
    const ch = process.channel;
    if (ch && typeof ch.unrefCounted === 'function') ch.unrefCounted();
  }
})();
