// Prints cfg.lines numbered lines to stdout as fast as the pipe takes them (batched writes, honouring
// back-pressure), framed by "start <epoch ms>" and "end", then stays alive so no manager restarts it.
'use strict';
const fs = require('fs');
const path = require('path');
const cfg = JSON.parse(fs.readFileSync(path.join(__dirname, 'bench.json'), 'utf8'));
const N = cfg.lines;
const BATCH = 500;
let i = 0;
process.stdout.write('start ' + Date.now() + '\n');
function pump() {
  while (i < N) {
    let chunk = '';
    const stop = Math.min(N, i + BATCH);
    for (; i < stop; i++) chunk += 'line ' + i + '\n';
    if (!process.stdout.write(chunk)) { process.stdout.once('drain', pump); return; }
  }
  process.stdout.write('end\n');
}
pump();
setInterval(() => {}, 1 << 30);
