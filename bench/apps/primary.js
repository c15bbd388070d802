// Node `cluster` primary for the anchors: forks cfg.workers workers running hello.js with the scheduling
// policy in cfg.policy ("rr" or "none"); re-forks a worker that exits when cfg.refork is set.
'use strict';
const cluster = require('cluster');
const fs = require('fs');
const path = require('path');
const cfg = JSON.parse(fs.readFileSync(path.join(__dirname, 'bench.json'), 'utf8'));
cluster.schedulingPolicy = cfg.policy === 'none' ? cluster.SCHED_NONE : cluster.SCHED_RR;
cluster.setupPrimary({ exec: path.join(__dirname, 'hello.js') });
for (let i = 0; i < (cfg.workers || 2); i++) cluster.fork();
let stopping = false;
cluster.on('exit', () => { if (cfg.refork && !stopping) cluster.fork(); });
const stop = () => {
  stopping = true;
  for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL');
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
