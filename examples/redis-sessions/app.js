// An Express app whose sessions live in Redis (express-session + connect-redis), so that any
// worker of a cluster serves any session: run with `cohort start cohort.toml` (4 workers behind a
// cohort balancer, Redis started first by cohort). With SESSION_STORE=memory it keeps sessions in
// the worker's own memory instead (the sticky-session variant, cohort-sticky.toml).
//
// GET /         counts visits in the session; answers which worker (pid) served it
// GET /health   200 while Redis answers PING (503 otherwise): cohort's readiness probe
const express = require('express');
const session = require('express-session');

const port = Number(process.env.PORT || 3100);
const storeKind = process.env.SESSION_STORE || 'redis';
const secret = process.env.SESSION_SECRET || 'change-me: read it from the environment in production';

const app = express();
let client = null;
let store; // undefined: express-session's in-memory store (one per worker)

if (storeKind === 'redis') {
  const { createClient } = require('redis');
  const RedisStore = require('connect-redis').default; // connect-redis 7
  client = createClient({
    url: process.env.REDIS_URL || 'redis://127.0.0.1:6391',
    // Commands fail at once while Redis is away, instead of queueing until it is back: a request
    // gets an error (and /health a 503) rather than hanging.
    disableOfflineQueue: true,
    socket: { connectTimeout: 1000, reconnectStrategy: (tries) => Math.min(100 * (tries + 1), 1000) },
  });
  let up = null;
  client.on('ready', () => {
    if (up !== true) console.log(`redis: connected (pid ${process.pid})`);
    up = true;
  });
  client.on('error', (e) => {
    if (up !== false) console.error(`redis: ${e.message} (pid ${process.pid}); reconnecting`);
    up = false;
  });
  client.connect().catch(() => {}); // the 'error' handler reports it; the client keeps trying
  store = new RedisStore({ client, prefix: 'sess:' });
}

// While Redis is away, say so at once (503), for new visitors too: a session that cannot be
// stored is not a session. cohort's readiness probe (/health) takes the worker out meanwhile.
app.use((req, res, next) => {
  if (client && !client.isReady && req.path !== '/health') {
    return res.status(503).json({ error: 'session store unavailable', pid: process.pid });
  }
  next();
});

app.use(
  session({
    store,
    secret,
    name: 'sid',
    resave: false,
    saveUninitialized: false,
    cookie: { httpOnly: true, sameSite: 'lax', maxAge: 24 * 3600 * 1000 },
  }),
);

app.get('/health', async (req, res) => {
  if (!client) return res.json({ ok: true, store: 'memory', pid: process.pid });
  try {
    const pong = await Promise.race([
      client.ping(),
      new Promise((_, reject) => setTimeout(() => reject(new Error('PING timed out')), 500)),
    ]);
    res.json({ ok: pong === 'PONG', store: 'redis', pid: process.pid });
  } catch (e) {
    res.status(503).json({ ok: false, error: e.message, pid: process.pid });
  }
});

app.get('/', (req, res) => {
  req.session.views = (req.session.views || 0) + 1;
  if (!req.session.firstPid) req.session.firstPid = process.pid;
  res.json({
    views: req.session.views,
    pid: process.pid,
    worker: Number(process.env.NODE_APP_INSTANCE || 0),
    createdBy: req.session.firstPid,
    store: storeKind,
  });
});

// A session store that cannot be reached is a 503 with a reason, not a hang or a stack trace.
app.use((err, req, res, next) => {
  console.error(`request failed: ${err.message}`);
  res.status(503).json({ error: 'session store unavailable', detail: err.message, pid: process.pid });
});

app.listen(port, () => console.log(`listening on :${port} (pid ${process.pid}, sessions in ${storeKind})`));
